//! Traffic recorded answer by answer: clients that keep requesting one
//! path on several hosts, for tests that judge which version served what,
//! and when (the canary tests).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::Server;

/// One answer the traffic got.
#[derive(Clone)]
pub struct Sample {
    pub host: usize,
    /// When the request was sent, and when its answer came.
    pub sent: Instant,
    pub at: Instant,
    pub status: u16,
    /// `X-Component-Version`, without `sha256:`.
    pub digest: String,
}

/// Requests to every host until stopped, each answer recorded.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    /// `clients` concurrent clients per host, on `path`.
    pub fn start(hosts: &[&Server], path: &str, clients: usize) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (host, s) in hosts.iter().enumerate() {
            for _ in 0..clients {
                let (url, client, stop, samples) = (s.url(path), s.client.clone(), stop.clone(), samples.clone());
                tasks.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let sent = Instant::now();
                        let (status, digest) = match client.get(&url).send().await {
                            Ok(resp) => {
                                let digest = resp.headers().get("x-component-version").and_then(|v| v.to_str().ok());
                                let digest = digest.unwrap_or_default().trim_start_matches("sha256:").to_string();
                                (resp.status().as_u16(), digest)
                            }
                            Err(_) => (0, String::new()),
                        };
                        samples.lock().unwrap().push(Sample { host, sent, at: Instant::now(), status, digest });
                    }
                }));
            }
        }
        Traffic { stop, samples, tasks }
    }

    pub fn since(&self, from: Instant) -> Vec<Sample> {
        self.samples.lock().unwrap().iter().filter(|s| s.at >= from).cloned().collect()
    }

    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("traffic task");
        }
        Arc::try_unwrap(self.samples).map(|m| m.into_inner().unwrap()).unwrap_or_default()
    }
}
