use std::future::Future;
use std::sync::Mutex;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A background task that runs until told to stop, or until its owner is dropped: what the
/// runners' handles share.
#[derive(Debug)]
pub(crate) struct Background {
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Background {
    /// Spawns `run`, giving it the receiver that turns `true` when it should stop.
    ///
    /// # Panics
    ///
    /// Panics if called outside a tokio runtime.
    pub(crate) fn spawn<F, Fut>(run: F) -> Self
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = watch::channel(false);
        Self {
            stop,
            task: Mutex::new(Some(tokio::spawn(run(stopped)))),
        }
    }

    /// Tells the task to stop and waits until it has.
    pub(crate) async fn stop(&self) {
        let _ = self.stop.send(true);
        let task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
