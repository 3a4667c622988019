//! Our routing of the others' stems to the plugin's auxiliary outputs, kept in the project by
//! the name each stem's sender plays under (participant ids change from session to session).

use std::collections::BTreeMap;
use std::sync::RwLock;

use echoel_gui::model::StemOut;
use echoel_net::presence::PeerPresence;
use echoel_net::session::MemberStatus;
use echoel_net::wire::{ParticipantId, StemId};

use crate::bridge::Bridge;

/// The project's key for one stem: the sender's name, and the stem's name when it has one.
pub fn saved_key(name: &str, stem: &str) -> String {
    if stem.is_empty() {
        name.to_owned()
    } else {
        format!("{name}/{stem}")
    }
}

/// The output each stem plays on here (absent: the main output).
#[derive(Debug, Default)]
pub struct Routes {
    routes: BTreeMap<(ParticipantId, StemId), u8>,
    /// The project's keys looked up for each member already: a stem's name may come with a
    /// later presence than the member's first.
    restored: std::collections::BTreeSet<(ParticipantId, String)>,
}

/// The stems a member sends as (number, name): their presence's list, else their one stream.
fn stems_of(presence: Option<&PeerPresence>) -> Vec<(StemId, String)> {
    match presence {
        Some(p) if !p.presence.stems.is_empty() => p.presence.stems.clone(),
        _ => vec![(StemId(0), String::new())],
    }
}

impl Routes {
    /// Routes one stem and keeps it in `saved` under its sender's name.
    pub fn set(
        &mut self,
        saved: &RwLock<BTreeMap<String, u8>>,
        who: (ParticipantId, StemId),
        key: Option<String>,
        bus: u8,
        bridge: &Bridge,
    ) {
        self.routes.insert(who, bus);
        if let Some(key) = key {
            let mut saved = saved.write().unwrap_or_else(|e| e.into_inner());
            if bus == 0 {
                saved.remove(&key);
            } else {
                saved.insert(key, bus);
            }
        }
        bridge.set_routes(self.routes.clone());
    }

    /// The project's key for `who`'s stem `stem`.
    pub fn key_of(name: &str, presence: Option<&PeerPresence>, stem: StemId) -> String {
        let stems = stems_of(presence);
        let stem_name = stems
            .iter()
            .find(|(s, _)| *s == stem)
            .map_or("", |(_, n)| n.as_str());
        saved_key(name, stem_name)
    }

    /// A member we have not routed yet, whose name the project knows: their saved routes, in
    /// force from their first frame on. Once their stems are known (their presence came).
    pub fn restore(
        &mut self,
        saved: &RwLock<BTreeMap<String, u8>>,
        member: ParticipantId,
        name: &str,
        presence: Option<&PeerPresence>,
        bridge: &Bridge,
    ) {
        if presence.is_none() {
            return;
        }
        let saved = saved.read().unwrap_or_else(|e| e.into_inner());
        let mut changed = false;
        let stems = stems_of(presence);
        let single = stems.len() == 1;
        for (stem, stem_name) in stems {
            let key = saved_key(name, &stem_name);
            if !self.restored.insert((member, key.clone())) {
                continue;
            }
            // A project saved when the member's one track had no stem name kept it by name.
            let found = saved
                .get(&key)
                .or_else(|| single.then(|| saved.get(name)).flatten());
            if let Some(&bus) = found {
                changed |= self.routes.insert((member, stem), bus) != Some(bus);
            }
        }
        if changed {
            bridge.set_routes(self.routes.clone());
        }
    }

    /// Where each stem `m` sends plays here, for the editor.
    pub fn outputs_of(&self, m: &MemberStatus, presence: Option<&PeerPresence>) -> Vec<StemOut> {
        if m.info.role == echoel_net::wire::Role::Listener {
            return Vec::new();
        }
        let p = m.info.participant;
        stems_of(presence)
            .into_iter()
            .map(|(stem, name)| StemOut {
                stem: u16::from(stem.0),
                name,
                bus: self.routes.get(&(p, stem)).copied().unwrap_or(0),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use echoel_engine::{Engine, EngineConfig};
    use echoel_net::presence::Presence;

    fn presence(stems: &[&str]) -> PeerPresence {
        PeerPresence {
            participant: ParticipantId(7),
            presence: Presence {
                name: "ana".into(),
                stems: stems
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (StemId(i as u8), (*s).to_owned()))
                    .collect(),
                ..Presence::default()
            },
            age: std::time::Duration::ZERO,
            gone: false,
        }
    }

    #[test]
    fn a_route_saved_by_name_alone_applies_to_a_member_with_one_named_stem_only() {
        let (_engine, link) = Engine::new(EngineConfig {
            sample_rate_hz: 48_000,
            host_channels: 2,
            max_block_frames: 64,
        })
        .unwrap();
        let bridge = Bridge::new(link).unwrap();
        let saved = RwLock::new(BTreeMap::from([("ana".to_owned(), 4u8)]));
        let who = ParticipantId(7);

        let mut one = Routes::default();
        one.restore(&saved, who, "ana", Some(&presence(&["keys"])), &bridge);
        assert_eq!(one.routes.get(&(who, StemId(0))), Some(&4));

        // Two stems: the bare name says which of them no longer.
        let mut two = Routes::default();
        two.restore(
            &saved,
            who,
            "ana",
            Some(&presence(&["keys", "bass"])),
            &bridge,
        );
        assert!(two.routes.is_empty());
        // Saved by stem, it is that stem's.
        saved.write().unwrap().insert("ana/bass".into(), 2);
        let mut by_stem = Routes::default();
        by_stem.restore(
            &saved,
            who,
            "ana",
            Some(&presence(&["keys", "bass"])),
            &bridge,
        );
        assert_eq!(by_stem.routes.get(&(who, StemId(1))), Some(&2));
        assert_eq!(by_stem.routes.get(&(who, StemId(0))), None);
    }
}
