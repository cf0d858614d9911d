//! `wsgate check` opens every file the config names (SPEC §11): CA and
//! client certificate/key files are parsed, token files read, a file sink's
//! directory must be writable. Each problem names its key; no message ever
//! holds what a file contains. `check --no-files` skips all of this (CI on
//! another machine).
//!
//! The PEM checks are the ones `upstream::tls` makes at connect time
//! (rustls-pki-types PEM parsing, a root store, a client-auth config), done
//! here again because config sits below upstream and must not import it.

use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::{ConfigError, ConfigSource, Settings, SinkConfig, TlsConfig};

/// One problem: (key, message).
type Problem = (String, String);

/// Opens every file `settings` names; returns one error per problem found.
pub fn check_files(settings: &Settings, source: &ConfigSource) -> Result<(), Vec<ConfigError>> {
    let mut problems: Vec<Problem> = Vec::new();
    for (i, u) in settings.upstreams.iter().enumerate() {
        let key = |k: &str| format!("upstreams[{i}].{k}");
        check_tls(&u.tls, &key, &mut problems);
        if let Some(path) = &u.auth.token_file {
            check_secret_file(path).unwrap_or_else(|m| problems.push((key("auth.token_file"), m)));
        }
        if let Some(path) = &u.proxy.password_file {
            check_secret_file(path).unwrap_or_else(|m| problems.push((key("proxy.password_file"), m)));
        }
        for (name, spec) in &u.secrets {
            if let Some(path) = &spec.file {
                check_secret_file(path).unwrap_or_else(|m| problems.push((key(&format!("secrets.{name}.file")), m)));
            }
        }
    }
    if let Some(path) = &settings.subscribers.auth_token_file {
        check_secret_file(path).unwrap_or_else(|m| problems.push(("subscribers.auth_token_file".into(), m)));
    }
    for (i, sink) in settings.sinks.iter().enumerate() {
        match sink {
            SinkConfig::Stdout { .. } => {}
            SinkConfig::File { path, .. } => {
                check_writable(path).unwrap_or_else(|m| problems.push((format!("sinks[{i}].path"), m)));
            }
            SinkConfig::Webhook(w) => {
                if let Some(path) = &w.auth_token_file {
                    check_secret_file(path)
                        .unwrap_or_else(|m| problems.push((format!("sinks[{i}].auth_token_file"), m)));
                }
            }
            SinkConfig::Nats(n) => {
                for (key, path) in
                    [("creds_file", &n.creds_file), ("token_file", &n.token_file), ("password_file", &n.password_file)]
                {
                    if let Some(path) = path {
                        check_secret_file(path).unwrap_or_else(|m| problems.push((format!("sinks[{i}].{key}"), m)));
                    }
                }
            }
            SinkConfig::Redis(r) => {
                if let Some(path) = &r.password_file {
                    check_secret_file(path).unwrap_or_else(|m| problems.push((format!("sinks[{i}].password_file"), m)));
                }
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let origin = source.name();
    Err(problems.into_iter().map(|(key, message)| ConfigError { source: origin.clone(), key, message }).collect())
}

/// The three TLS files of one upstream, parsed as the connect will parse them.
fn check_tls(tls: &TlsConfig, key: &dyn Fn(&str) -> String, problems: &mut Vec<Problem>) {
    if let Some(path) = &tls.ca_file {
        if let Err(m) = check_ca(path) {
            problems.push((key("tls.ca_file"), m));
        }
    }
    let chain = tls.client_cert_file.as_deref().map(|path| {
        let chain = read_certs(path);
        if let Err(m) = &chain {
            problems.push((key("tls.client_cert_file"), m.clone()));
        }
        chain
    });
    let private = tls.client_key_file.as_deref().map(|path| {
        let k = read_key(path);
        if let Err(m) = &k {
            problems.push((key("tls.client_key_file"), m.clone()));
        }
        k
    });
    if let (Some(Ok(chain)), Some(Ok(private))) = (chain, private) {
        if let Err(e) = client_auth(chain, private) {
            problems.push((key("tls.client_key_file"), format!("does not go with tls.client_cert_file: {e}")));
        }
    }
}

/// Every certificate of a CA file must parse and be accepted as a root; at least one.
fn check_ca(path: &Path) -> Result<(), String> {
    let certs = read_certs(path)?;
    let mut roots = RootCertStore::empty();
    for (n, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| format!("{}: certificate {} is not usable: {e}", shown(path), n + 1))?;
    }
    Ok(())
}

/// A PEM certificate chain with at least one certificate.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    readable(path)?;
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: not valid PEM: {e}", shown(path)))?;
    if certs.is_empty() {
        return Err(format!("{}: holds no PEM certificate", shown(path)));
    }
    Ok(certs)
}

/// A PEM private key (PKCS#8, PKCS#1 or SEC1).
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    readable(path)?;
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: holds no usable PEM private key: {e}", shown(path)))
}

/// Builds the client-auth config the connect would build: the key must be
/// of a supported type and match the certificate.
fn client_auth(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<(), rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(RootCertStore::empty())
        .with_client_auth_cert(chain, key)
        .map(drop)
}

/// A token file: readable, UTF-8, not empty after trimming. Its content
/// is never shown.
fn check_secret_file(path: &Path) -> Result<(), String> {
    let text = std::fs::read(path).map_err(|e| cannot("read", path, &e))?;
    let text = String::from_utf8(text).map_err(|_| format!("{}: is not UTF-8 text", shown(path)))?;
    if text.trim().is_empty() {
        return Err(format!("{}: is empty", shown(path)));
    }
    Ok(())
}

/// A file sink's target: its directory exists and takes a new file (tried
/// with a temporary file, removed at once); an existing target opens for
/// appending. The sink file itself is never created here.
fn check_writable(path: &Path) -> Result<(), String> {
    if path.is_dir() {
        return Err(format!("{} is a directory", shown(path)));
    }
    if path.exists() {
        return OpenOptions::new()
            .append(true)
            .open(path)
            .map(drop)
            .map_err(|e| cannot("open for appending", path, &e));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(format!("directory {} does not exist", shown(dir)));
    }
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or_default();
    let probe = dir.join(format!(".wsgate-check-{}-{nanos}", std::process::id()));
    match OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(file) => {
            drop(file);
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(format!("directory {} is not writable: {}", shown(dir), io_text(&e))),
    }
}

/// Fails with the reason when `path` cannot be opened for reading.
fn readable(path: &Path) -> Result<(), String> {
    std::fs::File::open(path).map(drop).map_err(|e| cannot("read", path, &e))
}

/// `cannot read "/x": No such file or directory`
fn cannot(what: &str, path: &Path, e: &io::Error) -> String {
    format!("cannot {what} {}: {}", shown(path), io_text(e))
}

/// A path as shown in messages: quoted.
fn shown(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// The OS's words without the trailing " (os error 2)".
fn io_text(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sink directory probe leaves nothing behind and reports missing directories.
    #[test]
    fn writable_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.jsonl");
        assert_eq!(check_writable(&target), Ok(()));
        assert!(!target.exists(), "the sink file itself is not created");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the probe is removed");
        std::fs::write(&target, "x\n").unwrap();
        assert_eq!(check_writable(&target), Ok(()));
        let err = check_writable(&dir.path().join("nope/out.jsonl")).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        assert!(check_writable(dir.path()).unwrap_err().contains("is a directory"));
    }

    /// Token files must be readable and non-empty; contents never shown.
    #[test]
    fn secret_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  hunter2\n").unwrap();
        assert_eq!(check_secret_file(&path), Ok(()));
        std::fs::write(&path, " \n").unwrap();
        assert!(check_secret_file(&path).unwrap_err().ends_with("is empty"));
        let err = check_secret_file(&dir.path().join("nope")).unwrap_err();
        assert!(err.starts_with("cannot read \"") && err.ends_with("No such file or directory"), "{err}");
    }

    /// Garbage and empty PEM files are refused.
    #[test]
    fn pem_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        assert!(check_ca(&path).unwrap_err().contains("holds no PEM certificate"));
        std::fs::write(&path, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        assert!(check_ca(&path).is_err());
        assert!(read_key(&path).is_err());
    }
}
