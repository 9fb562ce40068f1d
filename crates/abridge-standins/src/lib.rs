//! Local HTTP servers that stand in for the outside services abridge calls, speaking their real
//! formats, for tests (no network): [`youtube`] (watch page, consent page, innertube player,
//! timed text) and [`llm`] (OpenAI Chat Completions and Anthropic Messages, with scripted
//! failures and a context window). Each counts the requests it gets, so tests can prove what
//! was (not) fetched.
//!
//! Each server runs on its own thread and runtime, so it keeps answering while a test blocks
//! (on a child process, say). It stops when dropped.

pub mod llm;
pub mod youtube;

use std::net::SocketAddr;

use tokio::sync::oneshot;

/// A running server; stops when dropped.
pub(crate) struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl Server {
    /// Binds 127.0.0.1 on a free port and serves `router` until dropped.
    pub(crate) fn start(router: impl FnOnce(SocketAddr) -> axum::Router + Send + 'static) -> Self {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        // Detached: a test never waits for a stand-in's open connections to close.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("stand-in runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind stand-in");
                let addr = listener.local_addr().expect("stand-in address");
                let app = router(addr);
                ready_tx.send(addr).expect("report address");
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stop_rx.await;
                    })
                    .await
                    .expect("serve stand-in");
            });
        });
        let addr = ready_rx.recv().expect("stand-in started");
        Self {
            addr,
            stop: Some(stop_tx),
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
