//! The TLS server configuration: a certificate chain and key from PEM files
//! (`--tls-cert`/`--tls-key`), or a self-signed certificate made at start-up for this
//! host's names and addresses (`--tls-self-signed`), kept in memory only.

use std::ffi::CStr;
use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

/// A ready TLS configuration and what to tell the operator about it.
pub struct TlsSetup {
    pub config: Arc<ServerConfig>,
    /// SHA-256 of the leaf certificate, `AB:CD:...` (what browsers show).
    pub fingerprint: String,
    /// The names and addresses a self-signed certificate covers (empty for files).
    pub self_signed_names: Vec<String>,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Loads a PEM certificate chain (leaf first) and its private key.
pub fn from_files(cert: &Path, key: &Path) -> io::Result<TlsSetup> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| invalid(format!("--tls-cert {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(invalid(format!(
            "--tls-cert {}: no CERTIFICATE in the file",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| invalid(format!("--tls-key {}: {e}", key.display())))?;
    let fingerprint = fingerprint(&chain[0]);
    Ok(TlsSetup {
        config: server_config(chain, key)?,
        fingerprint,
        self_signed_names: Vec::new(),
    })
}

/// Makes a certificate for `localhost`, this host's name and its addresses.
pub fn self_signed() -> io::Result<TlsSetup> {
    let names = host_names();
    let made = rcgen::generate_simple_self_signed(names.clone())
        .map_err(|e| io::Error::other(format!("cannot make a certificate: {e}")))?;
    let der = made.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
    let fingerprint = fingerprint(&der);
    Ok(TlsSetup {
        config: server_config(vec![der], key)?,
        fingerprint,
        self_signed_names: names,
    })
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> io::Result<Arc<ServerConfig>> {
    // An explicit provider: no process-wide default to install or to collide with.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| invalid(format!("certificate and key do not fit together: {e}")))?;
    // HTTP/1.1 only (browsers offer h2 first; WebSocket upgrades need HTTP/1.1).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `AB:CD:...`, the SHA-256 of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

/// `localhost`, the host name, and every address of the host's interfaces.
fn host_names() -> Vec<String> {
    let mut names = vec!["localhost".to_owned()];
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its length; gethostname NUL-terminates on success
    // when the name fits (the last byte is kept 0 in case it does not).
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) } == 0;
    if ok {
        if let Ok(name) = CStr::from_bytes_until_nul(&buf) {
            let name = name.to_string_lossy().into_owned();
            if !name.is_empty() && name != "localhost" {
                names.push(name);
            }
        }
    }
    let mut addrs: Vec<IpAddr> = interface_addresses();
    addrs.sort();
    addrs.dedup();
    names.extend(addrs.iter().map(IpAddr::to_string));
    names
}

fn interface_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we free with freeifaddrs; we
    // only read `ifa_addr` as the sockaddr type its family names.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut cur = list;
        while !cur.is_null() {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*addr.cast::<libc::sockaddr_in>();
                        out.push(IpAddr::from(
                            u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                        ));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*addr.cast::<libc::sockaddr_in6>();
                        let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                        // Link-local addresses need a zone, which URLs rarely carry.
                        if ip.segments()[0] & 0xffc0 != 0xfe80 {
                            out.push(IpAddr::V6(ip));
                        }
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_covers_localhost_and_loopback() {
        let setup = self_signed().unwrap();
        assert!(setup.self_signed_names.contains(&"localhost".to_owned()));
        assert_eq!(setup.fingerprint.len(), 32 * 3 - 1);
    }
}
