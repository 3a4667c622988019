//! A relay inside this process on loopback, with one room: what `echoel demo` and
//! `echoel bench record-trace` jam through.

use std::net::SocketAddr;
use std::path::PathBuf;

use echoel_net::invite::Invite;
use echoel_net::relay::{Relay, RelayConfig};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running relay; [`LocalRelay::stop`] closes it and removes its state.
pub struct LocalRelay {
    pub addr: SocketAddr,
    pub invite: Invite,
    state_dir: PathBuf,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl LocalRelay {
    /// Starts a relay on 127.0.0.1 with room `room`, its state in a temporary folder.
    pub fn start(rt: &Runtime, room: &str) -> anyhow::Result<Self> {
        let state_dir =
            std::env::temp_dir().join(format!("echoel-{room}-relay-{}", std::process::id()));
        let relay = rt.block_on(Relay::bind(&RelayConfig {
            listen: "127.0.0.1:0".parse()?,
            state_dir: state_dir.clone(),
            metrics: None,
        }))?;
        let addr = relay.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = rt.spawn(relay.run(async {
            let _ = stopped.await;
        }));
        let invite = echoel_net::relay::create_room(&state_dir, &addr.to_string(), Some(room))?;
        Ok(Self {
            addr,
            invite,
            state_dir,
            stop,
            task,
        })
    }

    /// Closes every connection and removes the relay's state.
    pub fn stop(self, rt: &Runtime) {
        let _ = self.stop.send(());
        let _ = rt.block_on(self.task);
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}
