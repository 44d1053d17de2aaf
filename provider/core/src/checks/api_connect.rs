//! Why a connection to the Kubernetes API failed, named, with a one-line
//! fix. The shell (preflight's `kube_api`) walks the error's source chain
//! and maps the typed errors it finds (rustls' certificate errors,
//! webpki's, the OS's connect errors, the connect timeout) to a [`Cause`];
//! this module words it.
//!
//! A CA certificate (basicConstraints CA:TRUE) served as the API server's
//! own certificate is refused, not accepted as kubectl accepts it: see
//! docs/preflight.md "TLS to the Kubernetes API".

/// The cause of a failed connection, as far as the error chain names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The serving certificate does not chain to the kubeconfig's CA.
    UnknownIssuer,
    /// The serving certificate is itself a CA certificate.
    CaAsServer,
    /// The serving certificate does not name the host dialled.
    NameMismatch {
        /// The host from the kubeconfig's `server` (or `tls-server-name`).
        expected: String,
        /// The names the certificate carries (may be empty).
        presented: Vec<String>,
    },
    /// The serving certificate (or one of its chain) has expired; the
    /// times are shown as given (RFC 3339), empty when unknown.
    Expired { not_after: String, now: String },
    /// A certificate of the chain is not valid yet.
    NotYetValid { not_before: String, now: String },
    /// Another certificate verdict (rustls' name of it).
    BadCertificate(String),
    /// The TLS handshake failed otherwise (an alert, no common version or
    /// cipher suite, a peer that does not speak TLS): rustls' words.
    Handshake(String),
    /// Nothing listens at the address (TCP connection refused).
    Refused,
    /// No connection within the connect timeout (TCP and TLS handshake).
    Timeout { seconds: u64 },
    /// The host name does not resolve.
    Dns,
}

/// A named cause: what happened and what to do, each one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explained {
    pub cause: String,
    pub fix: String,
}

fn names(presented: &[String]) -> String {
    if presented.is_empty() {
        "no DNS or IP name".to_owned()
    } else {
        presented.join(", ")
    }
}

/// `: not after T, now N` for the times known, or nothing.
fn times(pairs: &[(&str, &str)]) -> String {
    let known: Vec<String> = pairs
        .iter()
        .filter(|(_, t)| !t.is_empty())
        .map(|(label, t)| format!("{label} {t}"))
        .collect();
    if known.is_empty() {
        String::new()
    } else {
        format!(": {}", known.join(", "))
    }
}

/// The words for `cause` when connecting to the API server at `server`
/// (the kubeconfig's cluster URL).
pub fn explain(cause: &Cause, server: &str) -> Explained {
    let (cause, fix) = match cause {
        Cause::UnknownIssuer => (
            format!(
                "the certificate of the API server at {server} is not signed by the CA the kubeconfig trusts (unknown issuer)"
            ),
            "set the cluster's certificate-authority(-data) in the kubeconfig to the CA that signed the API server's certificate (kubeadm: /etc/kubernetes/pki/ca.crt)".to_owned(),
        ),
        Cause::CaAsServer => (
            format!(
                "the API server at {server} serves a CA certificate (basicConstraints CA:TRUE) as its own certificate; only a leaf certificate is accepted there"
            ),
            "reissue the API server's serving certificate as a leaf (CA:FALSE, extendedKeyUsage serverAuth) signed by the kubeconfig's CA (kubeadm certs renew apiserver does)".to_owned(),
        ),
        Cause::NameMismatch { expected, presented } => (
            format!(
                "the certificate of the API server at {server} is not valid for {expected} (it names {})",
                names(presented)
            ),
            format!(
                "point the kubeconfig's server at a name the certificate carries, set tls-server-name to one of them, or reissue the certificate with {expected} in its subjectAltName (kubeadm: apiServer.certSANs)"
            ),
        ),
        Cause::Expired { not_after, now } => (
            format!(
                "the certificate of the API server at {server} has expired{}",
                times(&[("not after", not_after), ("now", now)])
            ),
            "renew the API server's certificate (kubeadm certs renew apiserver, then restart kube-apiserver) and check the clocks of this host and the API server".to_owned(),
        ),
        Cause::NotYetValid { not_before, now } => (
            format!(
                "the certificate of the API server at {server} is not valid yet{}",
                times(&[("not before", not_before), ("now", now)])
            ),
            "correct the clock of this host or of the machine that issued the certificate (timedatectl; chrony or systemd-timesyncd)".to_owned(),
        ),
        Cause::BadCertificate(what) => (
            format!("the certificate of the API server at {server} is refused: {what}"),
            "reissue the API server's serving certificate as a leaf signed by the kubeconfig's CA (kubeadm certs renew apiserver)".to_owned(),
        ),
        Cause::Handshake(what) => (
            format!("the TLS handshake with the API server at {server} failed: {what}"),
            "check that the kubeconfig's server is the API server's https:// address and port (kubectl cluster-info prints it)".to_owned(),
        ),
        Cause::Refused => (
            format!("nothing listens at {server} (connection refused)"),
            "start kube-apiserver or correct the kubeconfig's server address and port (kubectl cluster-info prints it)".to_owned(),
        ),
        Cause::Timeout { seconds } => (
            format!("no connection to {server} within {seconds}s (connect timeout)"),
            "check that the address is reachable from here (firewall, routes, a load balancer with healthy backends) or raise --connect-timeout".to_owned(),
        ),
        Cause::Dns => (
            format!("the host of {server} does not resolve"),
            "correct the kubeconfig's server host or this host's DNS (resolvectl query <host>)".to_owned(),
        ),
    };
    Explained { cause, fix }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "https://10.0.0.1:6443";

    #[test]
    fn every_cause_has_a_named_cause_and_one_line_fix() {
        let causes = [
            Cause::UnknownIssuer,
            Cause::CaAsServer,
            Cause::NameMismatch {
                expected: "10.0.0.1".into(),
                presented: vec!["kubernetes".into()],
            },
            Cause::Expired {
                not_after: "2024-01-01T00:00:00Z".into(),
                now: "2026-01-01T00:00:00Z".into(),
            },
            Cause::NotYetValid {
                not_before: String::new(),
                now: String::new(),
            },
            Cause::BadCertificate("BadSignature".into()),
            Cause::Handshake("received fatal alert: HandshakeFailure".into()),
            Cause::Refused,
            Cause::Timeout { seconds: 3 },
            Cause::Dns,
        ];
        for c in &causes {
            let e = explain(c, SERVER);
            assert!(e.cause.contains(SERVER), "{c:?}: {}", e.cause);
            assert!(!e.fix.is_empty() && !e.fix.contains('\n'), "{c:?}");
            assert!(!e.cause.contains('\n'), "{c:?}");
        }
    }

    #[test]
    fn known_answers() {
        assert_eq!(
            explain(&Cause::CaAsServer, SERVER).cause,
            "the API server at https://10.0.0.1:6443 serves a CA certificate (basicConstraints CA:TRUE) as its own certificate; only a leaf certificate is accepted there"
        );
        let e = explain(
            &Cause::NameMismatch {
                expected: "10.0.0.1".into(),
                presented: vec![],
            },
            SERVER,
        );
        assert_eq!(
            e.cause,
            "the certificate of the API server at https://10.0.0.1:6443 is not valid for 10.0.0.1 (it names no DNS or IP name)"
        );
        assert!(e.fix.contains("10.0.0.1 in its subjectAltName"));
        assert_eq!(
            explain(
                &Cause::Expired {
                    not_after: "2024-01-01T00:00:00Z".into(),
                    now: String::new()
                },
                SERVER
            )
            .cause,
            "the certificate of the API server at https://10.0.0.1:6443 has expired: not after 2024-01-01T00:00:00Z"
        );
        assert_eq!(
            explain(
                &Cause::NotYetValid {
                    not_before: String::new(),
                    now: String::new()
                },
                SERVER
            )
            .cause,
            "the certificate of the API server at https://10.0.0.1:6443 is not valid yet"
        );
        assert_eq!(
            explain(&Cause::Timeout { seconds: 2 }, SERVER).cause,
            "no connection to https://10.0.0.1:6443 within 2s (connect timeout)"
        );
    }
}
