//! Decisions across streams beside single-stream commands, on every store: a command on a new
//! aggregate through a repository (the baseline), a decision that one email names one member
//! (reads the events tagged with the email, appends under the condition that none came since),
//! and rounds of 16 concurrent tasks: 16 commands, 16 decisions on 16 emails (disjoint
//! queries), and 16 decisions on one email (overlapping: one wins, 15 are refused and
//! recorded). An iteration is one command or decision in every case, so the medians compare
//! per operation.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use benches::{Account, command_context, open_account};
use cqrs_core::{
    CommandError, Decider, Decision, DomainEvent, Emit, EventQuery, ExpectedVersion, QueryItem,
    Repository, StreamId, Tag,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};

const TASKS: u64 = 16;

/// One member per email.
struct UniqueEmail;

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Registration {
    #[serde(rename = "member.register")]
    Register { member: String, email: String },
}

/// About 200 bytes of JSON, as the other benchmarks' events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum MemberEvent {
    #[serde(rename = "member.registered")]
    Registered {
        member: String,
        email: String,
        name: String,
        city: String,
        plan: String,
    },
}

impl DomainEvent for MemberEvent {
    fn tags(&self) -> Vec<Tag> {
        let Self::Registered { email, .. } = self;
        Tag::new("email", email).into_iter().collect()
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[error("the email is taken")]
struct EmailTaken;

impl Decision for UniqueEmail {
    const NAME: &'static str = "bench.unique_email";
    type Command = Registration;
    type Event = MemberEvent;
    type Error = EmailTaken;
    type State = bool;

    fn target(Registration::Register { member, .. }: &Registration) -> StreamId {
        StreamId::for_aggregate("member", member).expect("short")
    }

    fn query(Registration::Register { email, .. }: &Registration) -> EventQuery {
        EventQuery::items([QueryItem::types(["member.registered"])
            .with_tag(Tag::new("email", email).expect("short"))])
    }

    fn initial(_: &Registration) -> bool {
        false
    }

    fn apply(taken: &mut bool, _: &MemberEvent) {
        *taken = true;
    }

    fn decide(taken: &bool, command: &Registration) -> Result<Vec<Emit<MemberEvent>>, EmailTaken> {
        let Registration::Register { member, email } = command;
        if *taken {
            return Err(EmailTaken);
        }
        let registered = MemberEvent::Registered {
            member: member.clone(),
            email: email.clone(),
            name: "Ana Fernández García".into(),
            city: "Santiago de Compostela".into(),
            plan: "annual-with-newsletter".into(),
        };
        Ok(vec![
            Emit::to(Self::target(command), registered).expecting(ExpectedVersion::NoStream),
        ])
    }
}

fn register(member: String, email: &str) -> Registration {
    Registration::Register {
        member,
        email: format!("{email}@example.org"),
    }
}

/// Decides `command`; true if it was accepted, false if refused by the rule.
async fn decide(decider: &Decider<UniqueEmail>, command: Registration) -> bool {
    match decider.handle_with(command, command_context()).await {
        Ok(_) => true,
        Err(CommandError::Rejected(EmailTaken)) => false,
        Err(err) => panic!("decision failed: {err}"),
    }
}

/// Runs rounds of [`TASKS`] concurrent operations (`op(round, task)`) until `iters`
/// operations have run, and returns the time scaled to exactly `iters`.
fn rounds<F, Fut>(rt: &tokio::runtime::Runtime, iters: u64, counter: &AtomicU64, op: F) -> Duration
where
    F: Fn(u64, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let count = iters.div_ceil(TASKS).max(1);
    let started = Instant::now();
    rt.block_on(async {
        for _ in 0..count {
            let round = counter.fetch_add(1, Ordering::Relaxed);
            let tasks: Vec<_> = (0..TASKS)
                .map(|task| tokio::spawn(op.clone()(round, task)))
                .collect();
            for task in tasks {
                task.await.expect("task");
            }
        }
    });
    let ran = u32::try_from(count * TASKS).unwrap_or(u32::MAX);
    started.elapsed() / ran * u32::try_from(iters).unwrap_or(u32::MAX)
}

fn decisions(c: &mut Criterion) {
    let rt = benches::runtime();
    let dir = tempfile::tempdir().expect("dir");
    let counter = Arc::new(AtomicU64::new(0));
    for (engine, storage) in benches::stores(&rt, dir.path(), "decisions.db") {
        let accounts = Repository::<Account>::new(Arc::clone(&storage));
        let decider = Decider::<UniqueEmail>::new(Arc::clone(&storage));
        let mut group = c.benchmark_group(format!("{engine}/decisions"));
        group.throughput(Throughput::Elements(1));
        benches::settle_disk();
        group.bench_function("new_aggregate", |b| {
            b.to_async(&rt).iter(|| {
                open_account(
                    &accounts,
                    format!("one{}", counter.fetch_add(1, Ordering::Relaxed)),
                )
            });
        });
        benches::settle_disk();
        group.bench_function("decision_new_email", |b| {
            b.to_async(&rt).iter(|| {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let decider = &decider;
                async move {
                    assert!(decide(decider, register(format!("m{n}"), &format!("e{n}"))).await)
                }
            });
        });
        benches::settle_disk();
        group.bench_function("round_16_commands", |b| {
            b.iter_custom(|iters| {
                let accounts = accounts.clone();
                rounds(&rt, iters, &counter, move |round, task| {
                    let accounts = accounts.clone();
                    async move { open_account(&accounts, format!("r{round}-{task}")).await }
                })
            });
        });
        benches::settle_disk();
        group.bench_function("round_16_decisions_disjoint", |b| {
            b.iter_custom(|iters| {
                let decider = decider.clone();
                rounds(&rt, iters, &counter, move |round, task| {
                    let decider = decider.clone();
                    async move {
                        let command =
                            register(format!("d{round}-{task}"), &format!("d{round}-{task}"));
                        assert!(
                            decide(&decider, command).await,
                            "disjoint emails are all free"
                        );
                    }
                })
            });
        });
        let winners = Arc::new(AtomicU64::new(0));
        let rounds_run = Arc::new(AtomicU64::new(0));
        benches::settle_disk();
        group.bench_function("round_16_decisions_one_email", |b| {
            b.iter_custom(|iters| {
                let (decider, winners, rounds_run) = (
                    decider.clone(),
                    Arc::clone(&winners),
                    Arc::clone(&rounds_run),
                );
                rounds(&rt, iters, &counter, move |round, task| {
                    let (decider, winners, rounds_run) = (
                        decider.clone(),
                        Arc::clone(&winners),
                        Arc::clone(&rounds_run),
                    );
                    async move {
                        if task == 0 {
                            rounds_run.fetch_add(1, Ordering::Relaxed);
                        }
                        let command = register(format!("o{round}-{task}"), &format!("o{round}"));
                        if decide(&decider, command).await {
                            winners.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            });
        });
        group.finish();
        // Every round on one email had exactly one winner.
        assert_eq!(
            winners.load(Ordering::Relaxed),
            rounds_run.load(Ordering::Relaxed),
            "{engine}: one winner per email"
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = decisions
}
criterion_main!(benches);
