//! `cargo run -p conference-example`: runs the framework walkthrough (the conference web app
//! takes its place once it is built).

use std::io::Write;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    conference_example::walkthrough::run(&mut out).await?;
    out.flush()?;
    Ok(())
}
