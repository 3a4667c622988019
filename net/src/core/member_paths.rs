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
        j.ways.entry(member).or_default().opened();
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
            j.ways.entry(member).or_default().opened();
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

    /// `id` has new ways to reach it: tried now, if none of the old ones is open.
    pub(super) fn moved(&mut self, id: MemberId, local: Vec<std::net::SocketAddr>) {
        let Some(j) = &mut self.joined else { return };
        let Some(info) = j.members.get_mut(&id) else {
            return;
        };
        info.local = local;
        let info = info.clone();
        if !j.paths.contains(&id) {
            self.maybe_dial(&info);
        }
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

    /// Whether `member`'s audio comes first by the relay although a direct path carries it:
    /// the direct path is the slower way, and the relay's copies are what we play.
    pub fn relay_faster(&self, member: MemberId) -> bool {
        self.joined
            .as_ref()
            .and_then(|j| j.ways.get(&member))
            .is_some_and(|w| w.relay_faster)
    }
}

/// How one member's audio reaches us.
#[derive(Debug, Default)]
pub(super) struct Way {
    /// Times a shorter way opened ([`AudioFrame::path_epoch`]).
    epoch: u8,
    /// While a direct path carries: the share of frames whose first copy came by the relay,
    /// averaged over about 256 frames (a second at 2.5 ms), and whether that makes the relay
    /// the faster way (on above 80 %, off below 40 %: a lossy direct path is not slower).
    relay_first: f32,
    relay_faster: bool,
}

impl Way {
    /// A direct path came up or carries again: its frames from now on tell the playout that
    /// the way they come changed, and which way is faster is measured afresh.
    fn opened(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        self.relay_first = 0.0;
        self.relay_faster = false;
    }

    /// The first copy of a frame from `member` came `via`; `carries`: a direct path to it
    /// carries. Returns the member's path epoch.
    pub(super) fn first_copy(
        ways: &mut BTreeMap<MemberId, Way>,
        member: MemberId,
        via: Via,
        carries: bool,
    ) -> u8 {
        if !carries {
            return ways.get(&member).map_or(0, |w| w.epoch);
        }
        let w = ways.entry(member).or_default();
        let by_relay = f32::from(u8::from(via == Via::Relay));
        w.relay_first += (by_relay - w.relay_first) / 256.0;
        if w.relay_first > 0.8 {
            w.relay_faster = true;
        } else if w.relay_first < 0.4 {
            w.relay_faster = false;
        }
        w.epoch
    }
}
