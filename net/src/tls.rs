//! TLS and QUIC settings: the relay's persisted identity, certificate pinning from the invite,
//! and transport parameters tuned for small real-time datagrams.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{EndpointConfig, TransportConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::congestion::{CongestionSignal, MediaControllerFactory};
use crate::invite::CertFingerprint;
use crate::wire::ALPN;

/// The server name every Echoel certificate carries; identity comes from the pinned
/// fingerprint, not from a name.
pub const SERVER_NAME: &str = "echoel-relay";
/// Keep-alive interval: audio keeps a busy path alive by itself; on a quiet one (a muted
/// member, a listener) this keeps NAT mappings open, which home routers hold for 30 s or more.
pub const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// A relay connection silent this long is given up. Long enough to ride out a bad stretch or a
/// Wi-Fi roam (a lossy path still carries something every few milliseconds); a relay that
/// restarts says so at once with a stateless reset (see [`relay_endpoint_config`]).
pub const RELAY_IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// A direct path silent this long is dead and its audio goes back to the relay, which every
/// member still reaches.
pub const DIRECT_IDLE_TIMEOUT: Duration = Duration::from_millis(2500);
/// The relay's datagram send queue per connection: one datagram of the largest kind (1.5 kB:
/// 20 ms frames at 256 kbit/s with redundancy) or a few of the common small ones; when full,
/// quinn drops the oldest.
pub const RELAY_DATAGRAM_SEND_BUFFER_BYTES: usize = 2 * 1024;
/// A member's: room for a whole send ring of common frames, which go out together after the
/// driver was held up; the session keeps the queue short itself ([`SEND_QUEUE_FRAMES`]).
pub const MEMBER_DATAGRAM_SEND_BUFFER_BYTES: usize = 8 * 1024;
/// Frames of audio that may wait in a connection's send queue (15 ms of 2.5 ms frames): a
/// frame that finds this many ahead of it would leave too late to play, and is dropped at the
/// sender instead.
pub const SEND_QUEUE_FRAMES: usize = 6;
/// Datagram receive queue: the network thread drains it continuously; 32 KiB is a fraction of
/// a second for a whole room.
const DATAGRAM_RECEIVE_BUFFER_BYTES: usize = 32 * 1024;
/// Loss detection waits this many later packets (default 3) and this many round trips
/// (default 9/8) before a packet counts as lost: jitter that reorders a few datagrams is not
/// loss. Audio datagrams are never retransmitted, so waiting costs nothing but window,
/// which [`crate::congestion::MediaController`] gives.
const PACKET_THRESHOLD: u32 = 12;
const TIME_THRESHOLD: f32 = 1.5;
/// Round trip assumed before the first sample (quinn's default is 333 ms): a band's paths are
/// shorter, and a lossy handshake retransmits sooner.
const INITIAL_RTT: Duration = Duration::from_millis(100);

/// Setting up TLS or the identity store failed.
#[derive(Debug, Error)]
pub enum TlsError {
    /// Reading or writing the state folder.
    #[error("cannot use the state folder {path}: {source}")]
    Store {
        /// The file or folder.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The stored identity is incomplete or unusable; it is never replaced unasked.
    #[error(
        "the relay identity in {dir} is damaged ({why}); restore cert.der and key.der from a \
         backup, or delete both to make a new identity (every invite made so far then stops \
         working)"
    )]
    Damaged {
        /// The state folder.
        dir: String,
        /// What is wrong.
        why: String,
    },
    /// Certificate generation or a rustls/quinn configuration error.
    #[error("TLS setup failed: {0}")]
    Config(String),
}

fn config_err(e: impl std::fmt::Display) -> TlsError {
    TlsError::Config(e.to_string())
}

/// A certificate and its private key.
pub struct Identity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Identity {
    /// A fresh self-signed identity.
    pub fn generate() -> Result<Self, TlsError> {
        let ck =
            rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()]).map_err(config_err)?;
        Ok(Self {
            cert: ck.cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()),
        })
    }

    /// Loads `cert.der` and `key.der` from `dir`, creating them on first use, so invites stay
    /// valid across relay restarts.
    pub fn load_or_create(dir: &Path) -> Result<Self, TlsError> {
        let store = |path: &Path, source| TlsError::Store {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| store(dir, e))?;
        let (cert_path, key_path) = (dir.join("cert.der"), dir.join("key.der"));
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => {
                let cert = std::fs::read(&cert_path).map_err(|e| store(&cert_path, e))?;
                let key = std::fs::read(&key_path).map_err(|e| store(&key_path, e))?;
                let id = Self {
                    cert: CertificateDer::from(cert),
                    key: PrivatePkcs8KeyDer::from(key),
                };
                // A damaged or mismatched pair fails here, with the folder named, rather than
                // at the first handshake.
                id.server_config_with(relay_transport())
                    .map_err(|e| TlsError::Damaged {
                        dir: dir.display().to_string(),
                        why: e.to_string(),
                    })?;
                return Ok(id);
            }
            // Half an identity is never completed with a new key: every invite pins the old
            // certificate, so a new one would lock every band out without a word.
            (true, false) | (false, true) => {
                let (present, missing) = if cert_path.exists() {
                    ("cert.der", "key.der")
                } else {
                    ("key.der", "cert.der")
                };
                return Err(TlsError::Damaged {
                    dir: dir.display().to_string(),
                    why: format!("{present} is there but {missing} is missing"),
                });
            }
            (false, false) => {}
        }
        let id = Self::generate()?;
        crate::store::write_atomically(&key_path, id.key.secret_pkcs8_der(), true)
            .map_err(|e| store(&key_path, e))?;
        crate::store::write_atomically(&cert_path, &id.cert, false)
            .map_err(|e| store(&cert_path, e))?;
        Ok(id)
    }

    /// SHA-256 of the certificate, as pinned by invites.
    pub fn fingerprint(&self) -> CertFingerprint {
        fingerprint_of(&self.cert)
    }

    /// A quinn server configuration presenting this identity, for members' direct paths; their
    /// congestion controllers report to `signal`.
    pub fn server_config(
        &self,
        signal: Arc<CongestionSignal>,
    ) -> Result<quinn::ServerConfig, TlsError> {
        self.server_config_with(direct_transport(signal))
    }

    /// The relay's server configuration: as [`Self::server_config`], and members are asked to
    /// acknowledge less often (see [`relay_transport`]).
    pub fn relay_server_config(&self) -> Result<quinn::ServerConfig, TlsError> {
        self.server_config_with(relay_transport())
    }

    fn server_config_with(
        &self,
        transport: Arc<TransportConfig>,
    ) -> Result<quinn::ServerConfig, TlsError> {
        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_err)?
            .with_no_client_auth()
            .with_single_cert(
                vec![self.cert.clone()],
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )
            .map_err(config_err)?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = QuicServerConfig::try_from(tls).map_err(config_err)?;
        let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(quic));
        cfg.transport_config(transport);
        Ok(cfg)
    }
}

fn fingerprint_of(cert: &[u8]) -> CertFingerprint {
    CertFingerprint(Sha256::digest(cert).into())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Transport parameters of a direct path between members, its congestion controller
/// reporting to `signal`.
pub fn direct_transport(signal: Arc<CongestionSignal>) -> Arc<TransportConfig> {
    Arc::new(base_transport(DIRECT_IDLE_TIMEOUT, signal))
}

/// Transport parameters of a member's connection to the relay, its congestion controller
/// reporting to `signal`.
pub fn member_relay_transport(signal: Arc<CongestionSignal>) -> Arc<TransportConfig> {
    Arc::new(base_transport(RELAY_IDLE_TIMEOUT, signal))
}

fn base_transport(idle: Duration, signal: Arc<CongestionSignal>) -> TransportConfig {
    transport_with(idle, signal, MEMBER_DATAGRAM_SEND_BUFFER_BYTES)
}

fn transport_with(
    idle: Duration,
    signal: Arc<CongestionSignal>,
    send_buffer: usize,
) -> TransportConfig {
    let mut t = TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(
            idle.try_into().expect("seconds are a valid idle timeout"),
        ))
        .datagram_receive_buffer_size(Some(DATAGRAM_RECEIVE_BUFFER_BYTES))
        .datagram_send_buffer_size(send_buffer)
        .initial_rtt(INITIAL_RTT)
        .packet_threshold(PACKET_THRESHOLD)
        .time_threshold(TIME_THRESHOLD)
        .congestion_controller_factory(controller(signal));
    t
}

/// Names the congestion controller in `ECHOEL_CONGESTION_CONTROLLER`, for benchmarks that
/// compare ours with quinn's: `media` (ours, the default), `newreno`, `cubic` or `bbr`.
pub const CONTROLLER_ENV: &str = "ECHOEL_CONGESTION_CONTROLLER";

fn controller(
    signal: Arc<CongestionSignal>,
) -> Arc<dyn quinn_proto::congestion::ControllerFactory + Send + Sync> {
    use quinn_proto::congestion::{BbrConfig, CubicConfig, NewRenoConfig};
    match std::env::var(CONTROLLER_ENV).as_deref() {
        Ok("newreno") => Arc::new(NewRenoConfig::default()),
        Ok("cubic") => Arc::new(CubicConfig::default()),
        Ok("bbr") => Arc::new(BbrConfig::default()),
        _ => Arc::new(MediaControllerFactory::new(signal)),
    }
}

/// The relay's transport: the members' settings plus the QUIC ACK-frequency extension, asking each
/// member to acknowledge every 8 packets (or 20 ms) instead of every 2. Audio datagrams are
/// never retransmitted, so acknowledgements only feed congestion control; at a 20-member
/// room's rate this removes most of the packets the relay receives.
pub fn relay_transport() -> Arc<TransportConfig> {
    // The relay has no encoder to slow down: its controllers' signal goes unread.
    let mut t = transport_with(
        RELAY_IDLE_TIMEOUT,
        Arc::default(),
        RELAY_DATAGRAM_SEND_BUFFER_BYTES,
    );
    let mut ack = quinn::AckFrequencyConfig::default();
    ack.ack_eliciting_threshold(7u32.into())
        .max_ack_delay(Some(Duration::from_millis(20)));
    t.ack_frequency_config(Some(ack));
    Arc::new(t)
}

/// Endpoint settings: zero-length connection IDs. Every Echoel endpoint talks to each remote
/// address over one connection, so quinn routes by address, and each audio packet is 8 bytes
/// shorter (at 2.5 ms frames that is 25.6 kbit/s per stream).
pub fn endpoint_config() -> EndpointConfig {
    let mut cfg = EndpointConfig::default();
    cfg.cid_generator(|| Box::new(quinn_proto::RandomConnectionIdGenerator::new(0)));
    cfg
}

/// The relay's endpoint settings: unlike members, it gives its connections 4-byte ids, and
/// derives its stateless-reset key from its persisted identity. A relay that restarted (a
/// crash, an upgrade) then answers the old connections' packets with a reset their members
/// recognise, and they rejoin at once instead of waiting out [`RELAY_IDLE_TIMEOUT`]. The ids
/// cost 4 bytes per datagram towards the relay only.
pub fn relay_endpoint_config(identity: &Identity) -> EndpointConfig {
    let okm = crate::crypto::derive_key(
        identity.key.secret_pkcs8_der(),
        None,
        &[b"echoel relay stateless reset"],
    );
    let mut cfg = EndpointConfig::new(Arc::new(ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        &okm,
    )));
    cfg.cid_generator(|| Box::new(quinn_proto::RandomConnectionIdGenerator::new(4)));
    cfg
}

/// Client settings for the relay: trust exactly the certificate the invite pins; the
/// connection's congestion controller reports to `signal`.
pub fn relay_client_config(
    pinned: CertFingerprint,
    signal: Arc<CongestionSignal>,
) -> Result<quinn::ClientConfig, TlsError> {
    client_config(
        Arc::new(CertVerifier {
            pinned: Some(pinned),
            provider: provider(),
        }),
        member_relay_transport(signal),
    )
}

/// Whether a connection attempt failed because the relay's certificate is not the one the
/// invite pins: a different relay, or one whose identity was made anew. Retrying cannot help.
pub fn is_pin_mismatch(e: &quinn::ConnectionError) -> bool {
    // Our verifier is the only source of this alert on our side of a handshake.
    let alert =
        rustls::AlertDescription::from(rustls::CertificateError::ApplicationVerificationFailure);
    matches!(e, quinn::ConnectionError::TransportError(t)
        if t.code == quinn::TransportErrorCode::crypto(u8::from(alert)))
}

/// Client settings for a direct path to another member. Its certificate is not pinned: a
/// direct path carries only audio sealed with the members' end-to-end keys, so whoever answers
/// can drop packets (as any router can) but can neither read nor forge them.
pub fn direct_client_config(
    signal: Arc<CongestionSignal>,
) -> Result<quinn::ClientConfig, TlsError> {
    client_config(
        Arc::new(CertVerifier {
            pinned: None,
            provider: provider(),
        }),
        direct_transport(signal),
    )
}

/// The keying material of a direct path's TLS session, the same at both ends: what each end's
/// [`crate::wire::PathProof`] is bound to.
pub fn path_binding(conn: &quinn::Connection) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    conn.export_keying_material(&mut out, b"EXPORTER-echoel-direct-path", b"")
        .ok()?;
    Some(out)
}

fn client_config(
    verifier: Arc<CertVerifier>,
    transport: Arc<TransportConfig>,
) -> Result<quinn::ClientConfig, TlsError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_err)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(config_err)?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    cfg.transport_config(transport);
    Ok(cfg)
}

/// Checks the TLS handshake signatures as usual, and the certificate against a pinned
/// fingerprint instead of a CA chain (when pinned).
#[derive(Debug)]
struct CertVerifier {
    pinned: Option<CertFingerprint>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for CertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.pinned {
            Some(pin) if fingerprint_of(end_entity) != pin => {
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ))
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("echoel-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn half_an_identity_is_an_error_and_is_never_completed_with_a_new_key() {
        let dir = scratch("half");
        let made = Identity::load_or_create(&dir).unwrap().fingerprint();
        assert_eq!(
            Identity::load_or_create(&dir).unwrap().fingerprint(),
            made,
            "the same identity across restarts"
        );
        let key = std::fs::read(dir.join("key.der")).unwrap();
        std::fs::remove_file(dir.join("cert.der")).unwrap();
        let err = Identity::load_or_create(&dir).err().expect("refused");
        assert!(err.to_string().contains("cert.der is missing"), "{err}");
        assert_eq!(std::fs::read(dir.join("key.der")).unwrap(), key, "key kept");
        assert!(!dir.join("cert.der").exists(), "no new certificate made");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_key_is_an_error_naming_the_folder() {
        let dir = scratch("damaged");
        Identity::load_or_create(&dir).unwrap();
        std::fs::write(dir.join("key.der"), b"not a key").unwrap();
        let err = Identity::load_or_create(&dir).err().expect("refused");
        assert!(matches!(err, TlsError::Damaged { .. }), "{err}");
        assert!(
            err.to_string().contains(&dir.display().to_string()),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
