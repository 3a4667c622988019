//! Direct paths as the member core sees them: which members to reach directly, which path
//! carries what, and what the relay is told to forward.

use std::time::Instant;

use super::*;

impl RoomCore {
    /// A direct path to `member` carries audio and document both ways from now on.
    pub fn handle_path_up(&mut self, _now: Instant, member: MemberId, doc: &mut DocReplica) {
        let Some(j) = self.joined.as_mut() else {
            return;
        };
        if !j.members.contains_key(&member) || !j.paths.insert(member) {
            return;
        }
        self.route();
        // Sync again over the new path, so nothing waits on the relay.
        self.sync_all(doc);
    }

    /// The direct path to `member` is gone: the relay carries everything again, and the
    /// document sync starts over by the relay (what was in flight on the path may be lost).
    pub fn handle_path_down(&mut self, _now: Instant, member: MemberId, doc: &mut DocReplica) {
        let Some(j) = self.joined.as_mut() else {
            return;
        };
        j.quiet.remove(&member);
        if !j.paths.remove(&member) {
            return;
        }
        let info = j.members.get(&member).cloned();
        self.route();
        // Try again: a changed address or a router that forgot its mapping heals this way.
        if let Some(info) = &info {
            self.maybe_dial(info);
        }
        let participant = info.map(|m| m.participant);
        if let Some(p) = participant {
            doc.restart(p);
        }
        self.sync_all(doc);
    }

    /// The direct path to `member` went quiet (nothing has come over it for a while) or
    /// carries again. While quiet, the relay also carries our audio to `member` (the path
    /// still does too: its copies are dropped as duplicates, and it is back the moment it
    /// carries); the path itself stays until its connection gives up.
    pub fn handle_path_quiet(&mut self, _now: Instant, member: MemberId, quiet: bool) {
        let Some(j) = self.joined.as_mut() else {
            return;
        };
        if !j.paths.contains(&member) {
            return;
        }
        let changed = if quiet {
            j.quiet.insert(member)
        } else {
            j.quiet.remove(&member)
        };
        if changed {
            self.route();
        }
    }

    /// Whether a direct path to `member` is up.
    pub fn is_direct(&self, member: MemberId) -> bool {
        self.joined
            .as_ref()
            .is_some_and(|j| j.paths.contains(&member))
    }

    /// Whether the direct path to `member` is up but quiet (see [`Self::handle_path_quiet`]).
    pub fn is_quiet(&self, member: MemberId) -> bool {
        self.joined
            .as_ref()
            .is_some_and(|j| j.quiet.contains(&member))
    }

    pub(super) fn maybe_dial(&mut self, other: &MemberInfo) {
        let Some(j) = &self.joined else { return };
        if self.force_relay {
            return;
        }
        self.events.push_back(if j.me < other.id {
            RoomEvent::Dial(other.clone())
        } else {
            RoomEvent::Punch(other.clone())
        });
    }

    /// Tells the relay which members no longer need our audio forwarded: those on a direct
    /// path that carries.
    pub(super) fn route(&mut self) {
        if let Some(j) = &self.joined {
            let direct = j.paths.difference(&j.quiet).copied().collect();
            self.transmits
                .push_back(Transmit::Relay(ClientMessage::Route { direct }));
        }
    }
}
