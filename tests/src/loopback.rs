//! A router served on 127.0.0.1, on a port of its own, for as long as its handle lives: how
//! each simulator and baseline in this crate listens.

use std::net::SocketAddr;

pub struct LoopbackServer {
    pub address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl LoopbackServer {
    pub async fn start(router: axum::Router) -> LoopbackServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        LoopbackServer { address, task }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
