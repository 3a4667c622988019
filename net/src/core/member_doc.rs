//! The session document between members: what each lacks goes to it, over its direct path
//! or by the relay, and what comes back is applied once whole.

use std::time::Instant;

use super::*;

impl RoomCore {
    /// Sends `to` whatever of the document it lacks: over its direct path if there is one
    /// (one hop less), else by the relay. Not before `to` has announced its key: its
    /// announcement brings the sync on.
    pub(super) fn sync_to(&mut self, to: &MemberInfo, doc: &mut DocReplica) {
        let Some(j) = &self.joined else { return };
        let direct = j.paths.contains(&to.id);
        let Ok((key, ends)) = j.keys.doc_sealer(to.id) else {
            return;
        };
        let msgs = match doc.outgoing(j.me, to.participant, (&key, ends), &mut *self.rng) {
            Ok(m) => m,
            Err(e) => {
                self.events.push_back(RoomEvent::Notice(e.to_string()));
                return;
            }
        };
        for msg in msgs {
            let t = if direct {
                Transmit::Direct(to.id, msg)
            } else {
                Transmit::Relay(ClientMessage::Send {
                    to: Some(to.id),
                    body: encode_peer(&msg),
                })
            };
            self.transmits.push_back(t);
        }
    }

    pub(super) fn sync_all(&mut self, doc: &mut DocReplica) {
        let members: Vec<MemberInfo> = self.members().cloned().collect();
        for m in &members {
            self.sync_to(m, doc);
        }
    }

    /// A document part: once the message is whole, apply it and answer its sender.
    pub(super) fn doc_message(
        &mut self,
        now: Instant,
        from: MemberId,
        msg: &PeerMessage,
        direct: bool,
        doc: &mut DocReplica,
    ) {
        let Some(p) = DocPart::of(msg) else { return };
        let Some((participant, signer)) = self.signer_of(from) else {
            return;
        };
        let Some(j) = self.joined.as_mut() else {
            return;
        };
        let key = match j.keys.doc_opener(from, &signer, p.ends) {
            Ok(key) => key,
            Err(CryptoError::UnknownKey) => return self.doc_unkeyed(now, from, participant, doc),
            Err(e) => {
                self.counters.forged.fetch_add(1, Relaxed);
                let notice = format!("session document message from {from:?} refused: {e}");
                self.events.push_back(RoomEvent::Notice(notice));
                return;
            }
        };
        match doc.receive(from, participant, direct, p, &key) {
            Ok(Received::Partial) => {}
            // Sync is pairwise, and every member syncs its own edits with everyone: only the
            // sender is owed an answer. (Should the sender leave before it reached someone,
            // its Left makes everyone sync with everyone.)
            Ok(r @ (Received::Unchanged | Received::Changed)) => {
                if r == Received::Changed {
                    self.events.push_back(RoomEvent::DocChanged);
                }
                if let Some(info) = self.joined.as_ref().and_then(|j| j.members.get(&from)) {
                    let info = info.clone();
                    self.sync_to(&info, doc);
                }
            }
            Err(e) => {
                let counter = match e {
                    crate::core::sync::DocFault::Forged => &self.counters.forged,
                    crate::core::sync::DocFault::Replayed(_) => &self.counters.replayed,
                    _ => &self.counters.malformed,
                };
                counter.fetch_add(1, Relaxed);
                let notice = format!("{e} (from {from:?})");
                self.events.push_back(RoomEvent::Notice(notice));
            }
        }
    }

    /// A document message sealed to an ephemeral of ours we no longer hold (we rotated
    /// many times since it was sent, or rejoined): its sender's sync with us waits for an
    /// answer that will not come, so we start it over (our fresh sync message is the
    /// answer), after announcing ourselves again, so what it sends next opens. At most once a
    /// second per member: a member cannot make us start over in a loop.
    pub(super) fn doc_unkeyed(
        &mut self,
        now: Instant,
        from: MemberId,
        participant: ParticipantId,
        doc: &mut DocReplica,
    ) {
        self.counters.unkeyed.fetch_add(1, Relaxed);
        let Some(j) = self.joined.as_mut() else {
            return;
        };
        let Some(info) = j.members.get(&from).cloned() else {
            return;
        };
        let asked = j.unkeyed.entry(from).or_insert(None);
        if asked.is_some_and(|t| now < t + UNKEYED_ASK_EVERY) {
            return;
        }
        *asked = Some(now);
        let announce = PeerMessage::Announce(j.keys.announce());
        self.relay(Some(from), announce);
        doc.restart(participant);
        self.sync_to(&info, doc);
    }
}
