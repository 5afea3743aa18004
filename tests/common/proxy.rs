//! A TCP proxy on loopback that can freeze the connections it carries: they stay open but pass
//! nothing, as a connection silently dropped by a NAT or a dead peer does. New connections
//! through it work as usual.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub struct Proxy {
    addr: SocketAddr,
    freeze: watch::Sender<u64>,
    sever: watch::Sender<u64>,
    _tasks: JoinSet<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (freeze, generation) = watch::channel(0u64);
        let (sever, severed) = watch::channel(0u64);
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let born = *generation.borrow();
                let generation = generation.clone();
                let severed_at = *severed.borrow();
                let mut severed = severed.clone();
                connections.spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        tokio::select! {
                            () = forward(client, server, born, generation) => {}
                            // Closed (both sockets dropped) when severed.
                            _ = severed.wait_for(|s| *s > severed_at) => {}
                        }
                    }
                });
            }
        });
        Self {
            addr,
            freeze,
            sever,
            _tasks: tasks,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every connection open now is closed (both ends), as a peer reset would.
    #[allow(dead_code)]
    pub fn sever_open_connections(&self) {
        self.sever.send_modify(|generation| *generation += 1);
    }

    /// Every connection open now stops passing bytes, without closing.
    pub fn freeze_open_connections(&self) {
        self.freeze.send_modify(|generation| *generation += 1);
    }
}

/// Copies both ways until the connection ends or is frozen; a frozen one is held open, idle.
async fn forward(
    mut client: TcpStream,
    mut server: TcpStream,
    born: u64,
    mut generation: watch::Receiver<u64>,
) {
    let mut from_client = [0u8; 16 * 1024];
    let mut from_server = [0u8; 16 * 1024];
    loop {
        tokio::select! {
            // A freeze wins over bytes that are ready too: after `freeze_open_connections`
            // returns, nothing more passes.
            biased;
            changed = generation.changed() => {
                if changed.is_err() || *generation.borrow() > born {
                    // Frozen: keep both sockets open and silent until the proxy is dropped.
                    std::future::pending::<()>().await;
                }
            }
            read = client.read(&mut from_client) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => if server.write_all(&from_client[..n]).await.is_err() { return },
            },
            read = server.read(&mut from_server) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => if client.write_all(&from_server[..n]).await.is_err() { return },
            },
        }
    }
}
