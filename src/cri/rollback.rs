//! Undo steps registered as a multi-step operation goes (pin namespaces, reserve a name, mount a
//! rootfs, …) and run in reverse when it fails, keeping the primary error. A step's own failure is
//! logged, never allowed to hide the error that triggered the rollback.

use futures::future::BoxFuture;

type Undo = Box<dyn FnOnce() -> BoxFuture<'static, Result<(), String>> + Send>;

#[derive(Default)]
pub struct Rollback {
    steps: Vec<(&'static str, Undo)>,
}

impl Rollback {
    pub fn new() -> Rollback {
        Rollback::default()
    }

    /// Register how to undo the step just completed.
    pub fn push<F, Fut>(&mut self, what: &'static str, undo: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        self.steps.push((what, Box::new(move || Box::pin(undo()))));
    }

    /// Undo everything, last step first.
    pub async fn run(mut self) {
        while let Some((what, undo)) = self.steps.pop() {
            if let Err(e) = undo().await {
                tracing::warn!(step = what, error = %e, "rollback step failed");
            }
        }
    }

    /// The operation succeeded: forget the undo steps.
    pub fn commit(mut self) {
        self.steps.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn runs_in_reverse_and_survives_failing_steps() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut rb = Rollback::new();
        for i in 0..3 {
            let log = log.clone();
            rb.push("step", move || async move {
                log.lock().unwrap().push(i);
                if i == 1 {
                    Err("boom".to_string())
                } else {
                    Ok(())
                }
            });
        }
        rb.run().await;
        assert_eq!(*log.lock().unwrap(), vec![2, 1, 0]);

        let ran = Arc::new(Mutex::new(false));
        let mut rb = Rollback::new();
        let r = ran.clone();
        rb.push("never", move || async move {
            *r.lock().unwrap() = true;
            Ok(())
        });
        rb.commit();
        assert!(!*ran.lock().unwrap());
    }
}
