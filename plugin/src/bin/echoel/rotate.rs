//! `echoel rotate`: gives a room a new secret from inside it. The tool joins with the invite it
//! is given, hands the new secret to everyone in the room end to end, has the relay admit by it
//! alone, prints the new invite and leaves. No one in the room drops out; invites sent before
//! stop working.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use echoel_net::session::{self, SessionConfig, SessionState};
use echoel_net::Invite;
use echoel_plugin::bridge::network_runtime;

/// How long joining may take (a relay far away, a retry or two).
const JOIN_LIMIT: Duration = Duration::from_secs(20);
/// How long the connection's close gets to reach the relay before the process ends.
const CLOSE_GRACE: Duration = Duration::from_millis(300);
/// How long the relay may take to confirm.
const CONFIRM_LIMIT: Duration = Duration::from_secs(10);

pub fn run(invite: &str, name: &str) -> anyhow::Result<()> {
    let old: Invite = invite.parse().context("the invite is unusable")?;
    let _rt = network_runtime().enter();
    let config = SessionConfig {
        force_relay: true,
        ..SessionConfig::new(old.clone(), name)
    };
    let handle = session::start(config, |_, _| {})?;
    let result = rotate(&handle, &old);
    handle.stop();
    // Long enough for the close to leave: a member gone without one stays listed until the
    // relay's idle timeout, and the room waits on its answers at the next rekey.
    std::thread::sleep(CLOSE_GRACE);
    println!("{}", result?);
    Ok(())
}

fn rotate(handle: &session::SessionHandle, old: &Invite) -> anyhow::Result<Invite> {
    let deadline = Instant::now() + JOIN_LIMIT;
    loop {
        let state = handle.status().state;
        if let Some(why) = state.stopped_because() {
            bail!("{why}");
        }
        if matches!(state, SessionState::Joined { .. }) {
            break;
        }
        if Instant::now() >= deadline {
            bail!("could not join the room within {JOIN_LIMIT:?}: {state:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    handle.rotate_secret();
    let deadline = Instant::now() + CONFIRM_LIMIT;
    while Instant::now() < deadline {
        let now = handle.invite();
        if now.secret != old.secret {
            return Ok(now);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the relay did not confirm the new secret within {CONFIRM_LIMIT:?}; nothing changed")
}
