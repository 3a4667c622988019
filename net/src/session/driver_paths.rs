//! The driver's side of direct paths: opening the way to members, taking the paths that
//! come up, noticing when one goes quiet, and saying why a member's audio takes the relay.

use std::collections::BTreeSet;

use super::*;

impl Driver {
    /// A direct path came up (`dialled`: the member we dialled): both ends prove who they
    /// are on it before it carries anything.
    pub(super) fn prove(&mut self, conn: Connection, dialled: Option<MemberId>, links: &Links) {
        tokio::spawn(direct::exchange_proofs(
            conn,
            self.member.clone(),
            dialled,
            links.inputs.clone(),
        ));
    }

    /// A direct path's far end said who it is: the path is that member's if the proof holds
    /// for the key the relay named for it. Where the path came from proves nothing: a router,
    /// a LAN or a member naming another's address could bring anyone.
    pub(super) fn claimed(
        &mut self,
        claimed: direct::ClaimedPath,
        now: Instant,
        links: &mut Links,
    ) {
        let participant = claimed.theirs.participant;
        let Some(info) = self.core.members().find(|m| m.participant == participant) else {
            links.unrecognised.push((claimed, now + RECOGNISE_TIMEOUT));
            return;
        };
        let (member, key) = (info.id, info.member);
        // An address we dialled that another member answers on (it moved there): that
        // member's path, and no path yet to the one we dialled.
        if let Some(dialled) = claimed.dialled.filter(|&d| d != member) {
            self.no_path(now, dialled, links);
        }
        if !key.verify_path(participant, &claimed.binding, &claimed.theirs.signature) {
            self.shared.counters.unproven_paths.fetch_add(1, Relaxed);
            tracing::warn!(
                "a direct path from {} did not prove it is {member:?}; closed",
                canonical(claimed.conn.remote_address())
            );
            claimed
                .conn
                .close(direct::UNPROVEN.into(), b"no proof of who you are");
            if claimed.dialled == Some(member) {
                self.no_path(now, member, links);
            }
            return;
        }
        let direct::ClaimedPath {
            conn, send, recv, ..
        } = claimed;
        self.adopt(member, (conn, send, recv), links);
    }

    /// Uses a proven path for `member`'s audio and document, if it still needs one.
    fn adopt(
        &mut self,
        member: MemberId,
        (conn, send, recv): (Connection, quinn::SendStream, quinn::RecvStream),
        links: &mut Links,
    ) {
        let known = self.core.members().any(|m| m.id == member);
        if !known || links.paths.contains_key(&member) {
            conn.close(0u32.into(), b"not needed");
            return;
        }
        let now = Instant::now();
        let after = links
            .reach
            .get(&member)
            .map_or(Duration::ZERO, |r| now.saturating_duration_since(r.since));
        if let Some(r) = links.reach.get_mut(&member) {
            (r.tries, r.again) = (0, None);
            r.trying = direct::Trying::default();
        }
        let (control, outbox) = mpsc::channel(CONTROL_QUEUE);
        let task = tokio::spawn(direct::serve_path(
            member,
            (conn.clone(), send, recv),
            outbox,
            links.inputs.clone(),
            links.datagrams.clone(),
            self.shared.counters.clone(),
        ));
        links.paths.insert(
            member,
            DirectLink {
                conn,
                after,
                heard: now,
                control,
                task,
            },
        );
        self.core
            .handle_path_up(Instant::now(), member, &mut self.shared.doc());
        self.publish(links, None);
    }

    /// A try at a direct path to `member` reached nothing: the relay carries it, and why.
    pub(super) fn no_path(&mut self, now: Instant, member: MemberId, links: &mut Links) {
        let observed = self
            .core
            .members()
            .find(|m| m.id == member)
            .map(|m| m.observed);
        if let (Some(observed), None) = (observed, links.paths.get(&member)) {
            let socket = &links.socket;
            let their_ports_differ = socket.heard_from_ip(observed) && !socket.heard_from(observed);
            let our_ports_differ = socket.reflected().is_some_and(|r| r != links.observed);
            if let Some(r) = links.reach.get_mut(&member) {
                r.why = RelayWhy::Blocked {
                    our_ports_differ,
                    their_ports_differ,
                };
                // Routers change (a block lifted, a mapping freed): tried again
                // later, less often each time.
                r.again = Some(now + REACH_AGAIN * 2u32.pow(r.tries.min(3)));
                r.tries += 1;
            }
            self.publish(links, None);
        }
    }

    /// How each member is reached, and why by the relay.
    pub(super) fn routes(&self, links: &Links) -> BTreeMap<MemberId, Route> {
        self.core
            .members()
            .map(|m| {
                let route = match links.paths.get(&m.id) {
                    Some(_) if self.core.is_quiet(m.id) => Route::Relay(RelayWhy::Quiet),
                    Some(_) if self.core.relay_faster(m.id) => Route::Relay(RelayWhy::Faster),
                    Some(p) => {
                        let addr = canonical(p.conn.remote_address());
                        Route::Direct {
                            addr,
                            lan: direct::on_our_networks(&links.networks, addr),
                            after: p.after,
                        }
                    }
                    None if self.config.force_relay => Route::Relay(RelayWhy::Off),
                    None => {
                        Route::Relay(links.reach.get(&m.id).map_or(RelayWhy::Trying, |r| r.why))
                    }
                };
                (m.id, route)
            })
            .collect()
    }
    /// Marks each direct path quiet or carrying by when something last came over it (every
    /// member sends a frame every few milliseconds): a path a router started dropping hands
    /// our audio to the relay within [`PATH_QUIET`], long before QUIC gives up on it.
    pub(super) fn check_paths(&mut self, now: Instant, links: &Links) {
        for (&m, p) in &links.paths {
            let quiet = now.saturating_duration_since(p.heard) > PATH_QUIET;
            if quiet != self.core.is_quiet(m) {
                tracing::info!(
                    "direct path to {m:?} {}",
                    if quiet {
                        "went quiet: the relay carries our audio too"
                    } else {
                        "carries again"
                    }
                );
                self.core.handle_path_quiet(now, m, quiet);
            }
        }
    }

    /// Tries again the direct paths whose time has come.
    pub(super) fn reach_again(&mut self, now: Instant, links: &mut Links) {
        let due: Vec<MemberId> = links
            .reach
            .iter()
            .filter(|(_, r)| r.again.is_some_and(|at| at <= now))
            .map(|(&m, _)| m)
            .collect();
        for m in due {
            if let Some(r) = links.reach.get_mut(&m) {
                r.again = None;
            }
            let info = self.core.members().find(|i| i.id == m).cloned();
            let dial = self.core.me().is_some_and(|me| me < m);
            if let (Some(info), false) = (info, links.paths.contains_key(&m)) {
                self.reach(links, info, dial);
            }
        }
    }

    /// Opens the way to `other` (dialling it if `dial`), again after a short wait if its
    /// last path just went down.
    pub(super) fn reach(&self, links: &mut Links, other: MemberInfo, dial: bool) {
        let now = Instant::now();
        let r = links.reach.entry(other.id).or_insert(Reaching {
            since: now,
            why: RelayWhy::Trying,
            down_at: None,
            again: None,
            tries: 0,
            trying: direct::Trying::default(),
        });
        r.why = RelayWhy::Trying;
        let delay = match r.down_at {
            Some(at) if now.saturating_duration_since(at) < REDIAL_AFTER => REDIAL_AFTER,
            _ => Duration::ZERO,
        };
        let v6 = links.socket.local_addr().is_ok_and(|a| a.is_ipv6());
        let candidates = direct::candidates(&other, &links.networks, v6);
        // IPv6 needs no mapping: a member we may reach by it is reached at once.
        if let Some((_, held)) = &mut links.held {
            if !candidates.iter().any(|c| c.addr.is_ipv6()) {
                held.retain(|(m, _)| m.id != other.id);
                held.push((other, dial));
                return;
            }
        }
        let id = other.id;
        let trying = direct::Reach {
            endpoint: links.endpoint.clone(),
            socket: links.socket.clone(),
            signal: self.shared.congestion.clone(),
            candidates,
            other,
            dial,
            delay,
            driver: links.inputs.clone(),
        }
        .start();
        // The try before this one (at addresses since moved) ends.
        if let Some(r) = links.reach.get_mut(&id) {
            r.trying = trying;
        }
    }

    /// Reaches the members held back while the router was asked for a port mapping, at
    /// their addresses as we know them now.
    pub(super) fn reach_held(&self, links: &mut Links) {
        let Some((_, held)) = links.held.take() else {
            return;
        };
        for (other, dial) in held {
            let now = self.core.members().find(|m| m.id == other.id).cloned();
            if let Some(other) = now {
                if !links.paths.contains_key(&other.id) {
                    self.reach(links, other, dial);
                }
            }
        }
    }
}

/// Whether our socket's addresses on our own networks are not the ones we joined with.
pub(super) fn addresses_moved(links: &Links) -> bool {
    let Ok(at) = links.socket.local_addr() else {
        return false;
    };
    let now: BTreeSet<SocketAddr> = direct::local_networks(at.port(), at.is_ipv6())
        .into_iter()
        .map(|n| n.0)
        .collect();
    now != links.networks.iter().map(|n| n.0).collect()
}
