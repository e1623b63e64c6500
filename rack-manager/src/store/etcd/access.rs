//! How this process proves itself to etcd, and knows it talks to the right etcd: TLS (a CA to
//! verify etcd's certificate, optionally a client certificate) and etcd's users and roles.
//!
//! Everything is checked before the first connection, so a mistake is named with its fix rather
//! than surfacing as a transport error: an https endpoint without a CA, TLS options for http
//! endpoints, a private key or password file that others can read. What etcd refuses later (a
//! wrong password, a role without the rack's prefix, a certificate that does not verify) is
//! translated by [`explain`] into what to do.
//!
//! Passwords never come from the command line (where `ps` shows them): from a file, or from the
//! environment.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

use crate::store::{Result, StoreError};

/// The environment variable a password may come from instead of a file.
pub const PASSWORD_ENV: &str = "RACK_ETCD_PASSWORD";

/// The largest certificate, key or password file read.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// A password, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(hidden)")
    }
}

/// An etcd user and its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdUser {
    pub name: String,
    pub password: Password,
}

/// TLS and authentication towards etcd; the default is neither (plain http, no user).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdAccess {
    /// `--etcd-cacert`: the CA that signed etcd's server certificates.
    pub ca: Option<PathBuf>,
    /// `--etcd-cert` and `--etcd-key`: this process's client certificate, where etcd asks for
    /// one (`--client-cert-auth`).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// `--etcd-user`, with its password.
    pub user: Option<EtcdUser>,
}

impl EtcdAccess {
    /// The user `--etcd-user NAME` with the password from `password_file` or, without one, from
    /// `env_password` (the value of [`PASSWORD_ENV`]); `None` when no user is given.
    pub fn user(
        name: Option<&str>,
        password_file: Option<&Path>,
        env_password: Option<String>,
    ) -> Result<Option<EtcdUser>> {
        let Some(name) = name else {
            if let Some(file) = password_file {
                return Err(settings(format!(
                    "--etcd-password-file {} is given without --etcd-user: name the etcd user it is the password of",
                    file.display()
                )));
            }
            return Ok(None);
        };
        if name.is_empty() {
            return Err(settings("--etcd-user is empty: give the etcd user's name".into()));
        }
        let password = match (password_file, env_password) {
            (Some(file), _) => {
                let text = read_secret(file, "--etcd-password-file")?;
                // The file's last line break is not part of the password (`echo pw > file`).
                let text = String::from_utf8(text)
                    .map_err(|_| settings(format!("--etcd-password-file {} is not UTF-8 text", file.display())))?;
                text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text).to_owned()
            }
            (None, Some(password)) => password,
            (None, None) => {
                return Err(settings(format!(
                    "--etcd-user {name} needs its password: put it in a file only you can read and give \
                     --etcd-password-file FILE, or set {PASSWORD_ENV} (never on the command line)"
                )));
            }
        };
        if password.is_empty() {
            return Err(settings(format!("the password of etcd user {name} is empty")));
        }
        Ok(Some(EtcdUser { name: name.to_owned(), password: Password(password) }))
    }

    /// Checks the settings against the endpoints and reads the files: the client's options.
    pub fn options(&self, endpoints: &[String]) -> Result<ConnectOptions> {
        let mut https = 0;
        for endpoint in endpoints {
            if endpoint.starts_with("https://") {
                https += 1;
            } else if !endpoint.starts_with("http://") {
                return Err(settings(format!(
                    "etcd endpoint {endpoint:?} has no scheme: give https://HOST:2379 (or http:// for an etcd without \
                     TLS)"
                )));
            }
        }
        let mut options = ConnectOptions::default();
        if https > 0 && https < endpoints.len() {
            return Err(settings(format!(
                "the etcd endpoints {} mix https:// and http://: one cluster serves one scheme",
                endpoints.join(",")
            )));
        }
        if https == 0 {
            if let Some(flag) = self.tls_flag() {
                return Err(settings(format!(
                    "{flag} is for TLS, but the etcd endpoints {} are http://: give https:// endpoints",
                    endpoints.join(",")
                )));
            }
        } else {
            let Some(ca) = &self.ca else {
                return Err(settings(format!(
                    "the etcd endpoints {} are https://, but no CA says which certificate to trust: give \
                     --etcd-cacert FILE (the CA that signed etcd's certificate, etcd's --trusted-ca-file)",
                    endpoints.join(",")
                )));
            };
            let ca_pem = read_pem(ca, "--etcd-cacert", "CERTIFICATE")?;
            let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(ca_pem));
            if let Some((cert, key)) = &self.client_cert {
                let cert_pem = read_pem(cert, "--etcd-cert", "CERTIFICATE")?;
                let key_pem = read_secret(key, "--etcd-key")?;
                if !String::from_utf8_lossy(&key_pem).contains("PRIVATE KEY-----") {
                    return Err(settings(format!(
                        "--etcd-key {} holds no PEM private key (-----BEGIN PRIVATE KEY-----)",
                        key.display()
                    )));
                }
                tls = tls.identity(Identity::from_pem(cert_pem, key_pem));
            }
            options = options.with_tls(tls);
        }
        if let Some(user) = &self.user {
            if https == 0 {
                tracing::warn!(
                    "etcd user {}'s password goes to {} without TLS: anyone on the path can \
                     read it; use https:// endpoints and --etcd-cacert",
                    user.name,
                    endpoints.join(",")
                );
            }
            // Tokens expire (etcd's --auth-token-ttl, 5 minutes by default): calls that meet an
            // expired one log in again and are retried.
            options = options.with_user(user.name.clone(), user.password.0.clone()).with_auto_token_refresh(true);
        }
        Ok(options)
    }

    fn tls_flag(&self) -> Option<&'static str> {
        if self.ca.is_some() {
            Some("--etcd-cacert")
        } else if self.client_cert.is_some() {
            Some("--etcd-cert")
        } else {
            None
        }
    }
}

fn settings(message: String) -> StoreError {
    StoreError::Access(message)
}

fn read_bounded(path: &Path, flag: &str) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| settings(format!("{flag} {}: {e}", path.display())))?;
    if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
        return Err(settings(format!("{flag} {} is not a file of at most 1 MiB", path.display())));
    }
    std::fs::read(path).map_err(|e| settings(format!("{flag} {}: {e}", path.display())))
}

fn read_pem(path: &Path, flag: &str, label: &str) -> Result<Vec<u8>> {
    let pem = read_bounded(path, flag)?;
    if !String::from_utf8_lossy(&pem).contains(&format!("-----BEGIN {label}-----")) {
        return Err(settings(format!("{flag} {} holds no PEM {} (-----BEGIN {label}-----)", path.display(), label)));
    }
    Ok(pem)
}

/// Reads a file that must stay secret: refused when its group or others may read or write it.
fn read_secret(path: &Path, flag: &str) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| settings(format!("{flag} {}: {e}", path.display())))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(settings(format!(
            "{flag} {} is open to other users (mode {mode:04o}): make it yours alone with `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    read_bounded(path, flag)
}

/// Everything an etcd client error says: its message and its causes.
pub fn describe(error: &etcd_client::Error) -> String {
    // A status prints its source's debug form: its message and the sources' messages read better.
    let (mut text, mut source): (String, Option<&(dyn std::error::Error + 'static)>) = match error {
        etcd_client::Error::TransportError(e) => (e.to_string(), std::error::Error::source(e)),
        etcd_client::Error::GRpcStatus(status) => (status.message().to_owned(), std::error::Error::source(status)),
        other => (other.to_string(), None),
    };
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// What to do about an error that etcd's access control or TLS caused; `None` for others.
/// `doing` says what was being done, e.g. `reading /mast/r1/hosts/`; `connecting`, whether it
/// was the first call.
pub fn explain(
    error: &etcd_client::Error,
    access: &EtcdAccess,
    endpoints: &str,
    rack: &str,
    doing: &str,
    connecting: bool,
) -> Option<String> {
    let text = describe(error);
    let lower = text.to_ascii_lowercase();
    let user = access.user.as_ref().map(|u| u.name.as_str());
    let ca = access.ca.as_ref().map_or("--etcd-cacert".to_owned(), |p| format!("--etcd-cacert {}", p.display()));
    // A connection closed while connecting: later, it is rather a member that died.
    let closed = connecting
        && (lower.contains("broken pipe") || lower.contains("connection reset") || lower.contains("stream closed"));
    let message = if lower.contains("invalid user id or password") {
        format!(
            "etcd at {endpoints} refused the password of user {}: check --etcd-password-file (or {PASSWORD_ENV}); an \
             etcd administrator sets it with `etcdctl user passwd {}`",
            user.unwrap_or("(none)"),
            user.unwrap_or("USER")
        )
    } else if user.is_none() && lower.contains("permission denied") {
        format!(
            "etcd at {endpoints} requires a user ({doing} was refused): give --etcd-user NAME and its password \
             (--etcd-password-file FILE or {PASSWORD_ENV}). Without one, etcd takes the common name of the \
             --etcd-cert certificate as the user: its role then needs `etcdctl role grant-permission ROLE \
             --prefix=true readwrite /mast/{rack}/`"
        )
    } else if lower.contains("user name is empty") || lower.contains("user name not found") {
        format!(
            "etcd at {endpoints} requires a user: give --etcd-user NAME and its password (--etcd-password-file FILE \
             or {PASSWORD_ENV}); see docs/rack-state.md, \"Securing etcd\""
        )
    } else if lower.contains("authentication is not enabled") {
        format!(
            "etcd at {endpoints} has authentication off, so anyone who reaches it may change the rack, yet \
             --etcd-user was given: enable it (`etcdctl auth enable`, see docs/rack-state.md) or drop --etcd-user"
        )
    } else if lower.contains("permission denied") {
        format!(
            "etcd user {} may not do this under /mast/{rack}/ ({doing}): grant its role the rack's prefix with \
             `etcdctl role grant-permission ROLE --prefix=true readwrite /mast/{rack}/`",
            user.unwrap_or("(none)")
        )
    } else if closed && !endpoints.contains("https://") {
        format!(
            "etcd at {endpoints} closed the connection: if it serves TLS (etcd's --cert-file), use https:// \
             endpoints and --etcd-cacert FILE ({text})"
        )
    } else if access.ca.is_some()
        && (closed
            || ["certificaterequired", "certificate required", "badcertificate", "bad certificate", "unknownca"]
                .iter()
                .any(|alert| lower.contains(alert)))
    {
        // etcd checks a client certificate after the handshake (TLS 1.3): a refusal reaches this
        // side as a named alert or, when the connection closes first, as a closed connection.
        match &access.client_cert {
            None => format!(
                "etcd at {endpoints} refused the connection after the TLS handshake: it requires a client \
                 certificate (it runs with --client-cert-auth): give --etcd-cert FILE and --etcd-key FILE, signed by \
                 a CA in etcd's --trusted-ca-file ({text})"
            ),
            Some((cert, _)) => format!(
                "etcd at {endpoints} refused the connection after the TLS handshake: it does not accept the client \
                 certificate --etcd-cert {}: give one signed by a CA in etcd's --trusted-ca-file ({text})",
                cert.display()
            ),
        }
    } else if lower.contains("notvalidforname") {
        format!(
            "etcd's certificate is not valid for the host name in {endpoints}: use the name or address its \
             certificate was issued for ({text})"
        )
    } else if lower.contains("invalid peer certificate") {
        format!("etcd's certificate at {endpoints} does not verify against {ca}: give the CA that signed it ({text})")
    } else if lower.contains("invalidcontenttype") || lower.contains("corrupt message") {
        format!("etcd at {endpoints} does not speak TLS: use http:// endpoints without --etcd-cacert ({text})")
    } else {
        return None;
    };
    Some(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("writes");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    fn message(result: Result<impl std::fmt::Debug>) -> String {
        result.expect_err("refused").to_string()
    }

    #[test]
    fn a_password_comes_from_a_private_file_or_the_environment() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = write(dir.path(), "pw", "s3cret\n", 0o600);
        let user = EtcdAccess::user(Some("rack"), Some(&file), Some("other".into())).expect("reads").expect("a user");
        assert_eq!(user, EtcdUser { name: "rack".into(), password: Password("s3cret".into()) }, "the file wins");
        assert!(!format!("{user:?}").contains("s3cret"), "never printed");
        let user = EtcdAccess::user(Some("rack"), None, Some("env".into())).expect("reads").expect("a user");
        assert_eq!(user.password, Password("env".into()));
        assert_eq!(EtcdAccess::user(None, None, Some("ignored".into())).expect("no user"), None);

        let loose = write(dir.path(), "loose", "s3cret\n", 0o644);
        let refused = message(EtcdAccess::user(Some("rack"), Some(&loose), None));
        assert!(
            refused.contains("mode 0644") && refused.contains(&format!("chmod 600 {}", loose.display())),
            "{refused}"
        );
        let refused = message(EtcdAccess::user(Some("rack"), None, None));
        assert!(refused.contains("--etcd-password-file FILE") && refused.contains(PASSWORD_ENV), "{refused}");
        let refused = message(EtcdAccess::user(None, Some(&file), None));
        assert!(refused.contains("without --etcd-user"), "{refused}");
        let empty = write(dir.path(), "empty", "\n", 0o600);
        assert!(message(EtcdAccess::user(Some("rack"), Some(&empty), None)).contains("empty"));
    }

    #[test]
    fn tls_settings_are_checked_against_the_endpoints() {
        let dir = tempfile::tempdir().expect("temp dir");
        let https = vec!["https://127.0.0.1:2379".to_owned()];
        let http = vec!["http://127.0.0.1:2379".to_owned()];
        let refused = message(EtcdAccess::default().options(&https));
        assert!(refused.contains("--etcd-cacert FILE"), "{refused}");
        let ca = write(dir.path(), "ca.pem", "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n", 0o644);
        let with_ca = EtcdAccess { ca: Some(ca.clone()), ..EtcdAccess::default() };
        assert!(message(with_ca.options(&http)).contains("give https:// endpoints"));
        let mixed = vec![https[0].clone(), http[0].clone()];
        assert!(message(with_ca.options(&mixed)).contains("mix https:// and http://"));
        assert!(message(with_ca.options(&["127.0.0.1:2379".to_owned()])).contains("has no scheme"));
        assert!(with_ca.options(&https).is_ok());
        assert!(EtcdAccess::default().options(&http).is_ok());

        let not_pem = write(dir.path(), "not.pem", "hello", 0o644);
        let refused = message(EtcdAccess { ca: Some(not_pem), ..EtcdAccess::default() }.options(&https));
        assert!(refused.contains("holds no PEM CERTIFICATE"), "{refused}");
        let key = write(dir.path(), "key.pem", "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n", 0o640);
        let loose = EtcdAccess { client_cert: Some((ca.clone(), key.clone())), ..with_ca.clone() };
        let refused = message(loose.options(&https));
        assert!(
            refused.contains("--etcd-key") && refused.contains("mode 0640") && refused.contains("chmod 600"),
            "{refused}"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        assert!(loose.options(&https).is_ok());
    }
}
