//! What the session-level benches share: a relay on loopback with one room.

use echoel_net::relay::{create_room, Relay, RelayConfig};
use echoel_net::Invite;

/// A relay serving on `rt` from a fresh state folder, and an invite to room `room` on it.
/// The folder is removed when the returned guard drops.
pub fn relay_with_room(rt: &tokio::runtime::Runtime, room: &str) -> (Invite, StateDir) {
    let state = std::env::temp_dir().join(format!("echoel-bench-{room}-{}", std::process::id()));
    let relay = rt
        .block_on(Relay::bind(&RelayConfig {
            listen: "127.0.0.1:0".parse().expect("valid"),
            state_dir: state.clone(),
            metrics: None,
        }))
        .expect("relay");
    let addr = relay.local_addr().expect("bound");
    rt.spawn(relay.run(std::future::pending()));
    let invite = create_room(&state, &addr.to_string(), Some(room)).expect("room");
    (invite, StateDir(state))
}

/// A bench's relay state folder, removed on drop.
pub struct StateDir(std::path::PathBuf);

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A single-thread network runtime, as the plugin runs its sessions on.
pub fn network_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}
