//! Who hears whom: the relay's routing as a pure function of membership, roles and
//! subscriptions.

use std::collections::BTreeSet;

use crate::wire::{MemberId, Role, StemId, StreamRef, Subscription};

/// Most entries a member's direct-path list or subscription may hold; longer lists are cut
/// (a control frame could otherwise carry thousands).
pub const MAX_ROUTE_ENTRIES: usize = 1024;

/// What the relay knows of a member that decides what it is sent and what it may send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routing {
    /// What it does in the room.
    pub role: Role,
    /// Members this one reaches over a direct path: the relay does not forward its audio to
    /// them.
    pub direct: BTreeSet<MemberId>,
    /// The streams it asked for.
    pub subscription: Subscription,
}

impl Routing {
    /// A member's routing as it joins: its role, no direct paths, every stream.
    pub fn joining(role: Role) -> Self {
        Self {
            role,
            ..Self::default()
        }
    }

    /// Takes a member's list of directly reached members.
    pub fn set_direct(&mut self, direct: &[MemberId]) {
        self.direct = direct.iter().copied().take(MAX_ROUTE_ENTRIES).collect();
    }

    /// Drops what names a member who left (its id will be given to someone else).
    pub fn forget(&mut self, member: MemberId) {
        self.direct.remove(&member);
        match &mut self.subscription {
            Subscription::All => {}
            Subscription::Only(streams) => streams.retain(|s| s.member != member),
            Subscription::AllBut(members) => members.retain(|&m| m != member),
        }
    }

    /// Takes a member's subscription.
    pub fn set_subscription(&mut self, mut subscription: Subscription) {
        match &mut subscription {
            Subscription::All => {}
            Subscription::Only(streams) => streams.truncate(MAX_ROUTE_ENTRIES),
            Subscription::AllBut(members) => members.truncate(MAX_ROUTE_ENTRIES),
        }
        self.subscription = subscription;
    }
}

/// Whether the role's audio is forwarded at all.
pub fn sends_audio(role: Role) -> bool {
    match role {
        Role::Performer => true,
        Role::Listener => false,
    }
}

/// Whether a subscription takes a stream.
pub fn wants(subscription: &Subscription, sender: MemberId, stem: StemId) -> bool {
    match subscription {
        Subscription::All => true,
        Subscription::Only(streams) => streams
            .iter()
            .any(|&StreamRef { member, stem: s }| member == sender && s.is_none_or(|s| s == stem)),
        Subscription::AllBut(members) => !members.contains(&sender),
    }
}

/// Whether a datagram of `sender`'s stream `stem` is forwarded to `recipient`.
pub fn forwards(
    (sender, from): (MemberId, &Routing),
    stem: StemId,
    (recipient, to): (MemberId, &Routing),
) -> bool {
    sender != recipient
        && sends_audio(from.role)
        && !from.direct.contains(&recipient)
        && wants(&to.subscription, sender, stem)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: MemberId = MemberId(0);
    const B: MemberId = MemberId(1);
    const C: MemberId = MemberId(300);

    #[test]
    fn performers_reach_everyone_else_but_themselves() {
        let p = Routing::joining(Role::Performer);
        assert!(forwards((A, &p), StemId(0), (B, &p)));
        assert!(forwards((A, &p), StemId(3), (C, &p)));
        assert!(!forwards((A, &p), StemId(0), (A, &p)));
    }

    #[test]
    fn a_listener_hears_and_is_not_heard() {
        let p = Routing::joining(Role::Performer);
        let l = Routing::joining(Role::Listener);
        assert!(forwards((A, &p), StemId(0), (B, &l)));
        assert!(!forwards((B, &l), StemId(0), (A, &p)));
    }

    #[test]
    fn a_direct_path_takes_the_pair_off_the_relay() {
        let mut a = Routing::joining(Role::Performer);
        a.set_direct(&[B]);
        let p = Routing::joining(Role::Performer);
        assert!(!forwards((A, &a), StemId(0), (B, &p)));
        assert!(forwards((A, &a), StemId(0), (C, &p)));
        assert!(
            forwards((B, &p), StemId(0), (A, &a)),
            "only the sender's list counts"
        );
    }

    #[test]
    fn a_subscription_picks_members_and_streams() {
        let p = Routing::joining(Role::Performer);
        let mut picky = Routing::joining(Role::Performer);
        picky.set_subscription(Subscription::Only(vec![
            StreamRef {
                member: A,
                stem: Some(StemId(2)),
            },
            StreamRef {
                member: C,
                stem: None,
            },
        ]));
        assert!(forwards((A, &p), StemId(2), (B, &picky)));
        assert!(!forwards((A, &p), StemId(0), (B, &picky)));
        assert!(forwards((C, &p), StemId(7), (B, &picky)));
        assert!(!forwards((MemberId(5), &p), StemId(0), (B, &picky)));
    }

    /// A musician's plugin leaves out its own other plugins; a member who leaves is forgotten,
    /// so whoever is given its id later is heard.
    #[test]
    fn all_but_leaves_out_those_members_until_they_leave() {
        let p = Routing::joining(Role::Performer);
        let mut mine = Routing::joining(Role::Performer);
        mine.set_subscription(Subscription::AllBut(vec![A]));
        assert!(!forwards((A, &p), StemId(0), (B, &mine)));
        assert!(!forwards((A, &p), StemId(3), (B, &mine)));
        assert!(forwards((C, &p), StemId(0), (B, &mine)));
        mine.forget(A);
        assert!(
            forwards((A, &p), StemId(0), (B, &mine)),
            "a newcomer given A's id"
        );
        mine.set_subscription(Subscription::AllBut((0..5000).map(MemberId).collect()));
        let Subscription::AllBut(m) = &mine.subscription else {
            unreachable!()
        };
        assert_eq!(m.len(), MAX_ROUTE_ENTRIES);
    }

    #[test]
    fn hostile_lists_are_cut() {
        let mut r = Routing::default();
        let many: Vec<MemberId> = (0..5000).map(MemberId).collect();
        r.set_direct(&many);
        assert_eq!(r.direct.len(), MAX_ROUTE_ENTRIES);
        let refs = many
            .iter()
            .map(|&member| StreamRef { member, stem: None })
            .collect();
        r.set_subscription(Subscription::Only(refs));
        let Subscription::Only(s) = &r.subscription else {
            unreachable!()
        };
        assert_eq!(s.len(), MAX_ROUTE_ENTRIES);
    }
}
