//! TLS for wss://: the trust flags (--ca, --fingerprint, --insecure), the rustls
//! client configuration (ring provider), the handshake and its error messages.

use std::io;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, OtherError,
    RootCertStore, SignatureScheme, StreamOwned,
};

use crate::net::{fd_hint, is_timeout, ConnErr};
use crate::{Fail, Res};

/// How a wss:// server's certificate is trusted (--ca, --fingerprint, --insecure).
#[derive(Clone)]
pub enum TlsTrust {
    Unset,
    /// A PEM file of certificates to trust (a CA, or the server's own certificate).
    Ca(String),
    /// The leaf certificate's SHA-256, 64 upper-case hex digits without colons.
    Fingerprint(String),
    /// Any certificate (handshake signatures are still verified).
    Insecure,
}

impl TlsTrust {
    pub fn set(&self, new: TlsTrust) -> Res<TlsTrust> {
        match self.flag() {
            None => Ok(new),
            Some(old) if new.flag() == Some(old) => {
                Err(Fail::Usage(format!("{old} is given twice")))
            }
            Some(old) => Err(Fail::Usage(format!(
                "{old} and {} exclude one another: give one of --ca, --fingerprint, --insecure",
                new.flag().unwrap_or_default()
            ))),
        }
    }

    pub fn flag(&self) -> Option<&'static str> {
        match self {
            TlsTrust::Unset => None,
            TlsTrust::Ca(_) => Some("--ca"),
            TlsTrust::Fingerprint(_) => Some("--fingerprint"),
            TlsTrust::Insecure => Some("--insecure"),
        }
    }
}

#[derive(Clone)]
pub struct TlsClient {
    pub config: Arc<ClientConfig>,
    pub name: ServerName<'static>,
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `AB:CD:...` (any case, colons optional) as 64 upper-case hex digits.
pub fn normalize_fp(v: &str) -> Res<String> {
    let hex: String = v
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Fail::Usage(format!(
            "--fingerprint {v}: expected a SHA-256 fingerprint, 32 hex bytes such as AB:CD:… (the server logs `TLS certificate SHA-256 fingerprint …` at start)"
        )));
    }
    Ok(hex)
}

/// SHA-256 of a DER certificate as `AB:CD:...`, the format the server logs
/// (`webrtc_signaling::tls::fingerprint`, which exists only with the `tls` feature;
/// this uses rustls' own SHA-256 so the tool builds either way).
pub fn fingerprint(der: &[u8]) -> String {
    let rustls::SupportedCipherSuite::Tls13(suite) =
        rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
    else {
        unreachable!("a TLS 1.3 suite")
    };
    let digest = suite.common.hash_provider.hash(der);
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

pub fn client_config(trust: &TlsTrust, base: &str) -> Res<Arc<ClientConfig>> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Fail::Fatal(format!("TLS setup: {e}")))?;
    let config = match trust {
        TlsTrust::Unset => {
            return Err(Fail::Usage(format!(
                "--url {base}: wss:// needs to know which server certificate to trust (this tool has no system roots): \
                 --fingerprint AB:CD:… to accept only the certificate with that SHA-256 (a --tls-self-signed server logs it at start), \
                 --ca FILE to trust the CA certificates of a PEM file (the issuer of the server's --tls-cert), \
                 or --insecure to accept any certificate"
            )))
        }
        TlsTrust::Ca(file) => {
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(file)
                .map_err(|e| Fail::Usage(format!("--ca {file}: {e}")))?;
            for cert in certs {
                let cert = cert.map_err(|e| Fail::Usage(format!("--ca {file}: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| Fail::Usage(format!("--ca {file}: {e}")))?;
            }
            if roots.is_empty() {
                return Err(Fail::Usage(format!(
                    "--ca {file}: no CERTIFICATE in this PEM file"
                )));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsTrust::Fingerprint(want) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(LooseVerifier {
                provider,
                fingerprint: Some(want.clone()),
            }))
            .with_no_client_auth(),
        TlsTrust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(LooseVerifier {
                provider,
                fingerprint: None,
            }))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// `--insecure` (any certificate) and `--fingerprint` (only the leaf with that
/// SHA-256): no chain, name or expiry checks, but the handshake signatures are
/// verified, so the server must hold the certificate's private key.
#[derive(Debug)]
pub struct LooseVerifier {
    pub provider: Arc<CryptoProvider>,
    pub fingerprint: Option<String>,
}

impl ServerCertVerifier for LooseVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(want) = &self.fingerprint {
            let got = fingerprint(end_entity);
            if got.replace(':', "") != *want {
                let want = want
                    .as_bytes()
                    .chunks(2)
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect::<Vec<_>>()
                    .join(":");
                return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                    OtherError(Arc::new(io::Error::other(format!(
                        "the server's certificate has SHA-256 fingerprint {got}, not the --fingerprint {want}"
                    )))),
                )));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
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
        rustls::crypto::verify_tls13_signature(
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

/// The TLS handshake over a connected socket, within `timeout` in all (each read
/// and write gets what is left of it); the socket keeps `timeout` as its read and
/// write timeouts afterwards.
pub fn tls_handshake(
    tls: &TlsClient,
    sock: TcpStream,
    timeout: Duration,
) -> Result<StreamOwned<ClientConnection, TcpStream>, ConnErr> {
    let conn = ClientConnection::new(tls.config.clone(), tls.name.clone())
        .map_err(|e| ConnErr::Tls(e.to_string()))?;
    let mut s = StreamOwned::new(conn, sock);
    let deadline = Instant::now() + timeout;
    while s.conn.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ConnErr::Tls("no TLS handshake within the timeout".into()));
        }
        let step = s
            .sock
            .set_read_timeout(Some(left))
            .and_then(|()| s.sock.set_write_timeout(Some(left)))
            .and_then(|()| s.conn.complete_io(&mut s.sock));
        match step {
            Ok((0, 0)) if s.conn.is_handshaking() => {
                return Err(ConnErr::Tls(
                    "the server closed the connection during the TLS handshake (not a TLS port? a plain server wants ws://)".into(),
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(ConnErr::Tls(tls_error(&e))),
        }
    }
    let restore = s
        .sock
        .set_read_timeout(Some(timeout))
        .and_then(|()| s.sock.set_write_timeout(Some(timeout)));
    restore.map_err(ConnErr::Tcp)?;
    Ok(s)
}

pub fn tls_error(e: &io::Error) -> String {
    if is_timeout(e) {
        return "no TLS handshake within the timeout".into();
    }
    if let Some(re) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return match re {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(o))) => {
                o.to_string()
            }
            rustls::Error::InvalidCertificate(_) => format!(
                "{re} (for a --tls-self-signed server use --fingerprint with the fingerprint it logs, or --insecure)"
            ),
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                format!("{re} (not a TLS server? a plain server wants ws://)")
            }
            _ => re.to_string(),
        };
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => format!(
            "{e} (the server closed the connection during the TLS handshake: not a TLS port? a plain server wants ws://)"
        ),
        _ => format!("{e}{}", fd_hint(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints() {
        let fp = "ab:".repeat(31) + "ab";
        assert_eq!(normalize_fp(&fp).ok().unwrap(), "AB".repeat(32));
        assert_eq!(
            normalize_fp(&"Ab".repeat(32)).ok().unwrap(),
            "AB".repeat(32)
        );
        assert!(normalize_fp("AB:CD").is_err());
        assert!(normalize_fp(&"ZZ".repeat(32)).is_err());
        // The SHA-256 of "abc" (FIPS 180-2), in the server's format.
        assert_eq!(
            fingerprint(b"abc"),
            "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
        );
        #[cfg(feature = "tls")]
        assert_eq!(
            fingerprint(b"abc"),
            webrtc_signaling::tls::fingerprint(b"abc")
        );
    }
}
