//! Direct paths as the member core sees them: which members to reach directly and which
//! paths carry. The relay carries every frame as well, as a standby (see
//! [`RoomCore::seal_audio`]).

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
        j.shorter_way(member);
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
    /// carries again: the relay's standby copies are what we hear of `member` meanwhile. The
    /// path itself stays until its connection gives up.
    pub fn handle_path_quiet(&mut self, _now: Instant, member: MemberId, quiet: bool) {
        let Some(j) = self.joined.as_mut() else {
            return;
        };
        if !j.paths.contains(&member) {
            return;
        }
        if quiet {
            j.quiet.insert(member);
        } else if j.quiet.remove(&member) {
            j.shorter_way(member);
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
}

impl Joined {
    /// A direct path to `member` opened or carries again: its frames from now on tell the
    /// playout that the way they come changed.
    fn shorter_way(&mut self, member: MemberId) {
        let epoch = self.path_epochs.entry(member).or_insert(0);
        *epoch = epoch.wrapping_add(1);
    }
}
