//! Key schedule and admission tests; helpers the other key tests share.

use super::*;

pub(super) fn room() -> RoomId {
    RoomId::new("band").unwrap()
}

/// A member key of a test's own.
pub(super) fn identity(seed: u8) -> std::sync::Arc<MemberKey> {
    std::sync::Arc::new(MemberKey::from_seed(&[seed; 32]))
}

pub(super) fn pair(now: Instant) -> (MemberKeys, MemberKeys) {
    let secret = RoomSecret::from_bytes([9; 32]);
    let a = MemberKeys::new(
        MemberId(1),
        secret.member_auth(&room()),
        identity(1),
        RotationPolicy::default(),
        now,
        &mut rand_core::OsRng,
    );
    let b = MemberKeys::new(
        MemberId(2),
        secret.member_auth(&room()),
        identity(2),
        RotationPolicy::default(),
        now,
        &mut rand_core::OsRng,
    );
    (a, b)
}

/// A and B exchange announcements and grants both ways.
pub(super) fn introduce(a: &mut MemberKeys, b: &mut MemberKeys, now: Instant) {
    let ga = b.accept_announce(&a.announce(), &a.public()).unwrap();
    let gb = a.accept_announce(&b.announce(), &b.public()).unwrap();
    a.accept_grant(&ga, now).unwrap();
    b.accept_grant(&gb, now).unwrap();
}

#[test]
fn admission_proof_checks_without_the_secret() {
    let secret = RoomSecret::generate();
    let verifier = secret.verifier(&room());
    let challenge = [3u8; 32];
    let proof = secret.admission_proof(&room(), &challenge, b"tls-binding");
    assert!(verifier.check(&challenge, b"tls-binding", &proof));
    assert!(!verifier.check(&challenge, b"other-connection", &proof));
    assert!(!verifier.check(&[4u8; 32], b"tls-binding", &proof));
    let wrong = RoomSecret::generate().admission_proof(&room(), &challenge, b"tls-binding");
    assert!(!verifier.check(&challenge, b"tls-binding", &wrong));
}
