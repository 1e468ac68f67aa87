//! The `graph-remediate mock` command line: its flags, turning them into a [`MockConfig`], and
//! running the server until shutdown.

use std::future::Future;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::graph::model::ResponseShape;
use crate::units::{self, Rate};

use super::{MockConfig, RetryAfterFormat, Tenant, serve_until};

/// The most identities `--identities N` seeds: past this a mistyped number would eat the
/// machine's memory (each identity is about a kilobyte).
const MAX_SYNTHETIC: usize = 1_000_000;

/// Where `--identities` takes the tenant from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    /// A number: [`Tenant::synthetic`] of that many.
    Synthetic(usize),
    /// Anything else: a file for [`Tenant::load`].
    File(PathBuf),
}

/// Serve a local imitation of Graph's invokeAction endpoint and of the Entra token endpoint.
#[derive(clap::Args, Debug, Clone)]
pub struct MockArgs {
    /// Address to listen on. Loopback only: the mock accepts made-up credentials. Port 0 picks a
    /// free port; the address actually bound is printed on stdout.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// Per-token rate limit, e.g. 50/s or 150/min; absent: unlimited.
    #[arg(long, value_name = "RATE", value_parser = units::parse_rate)]
    pub rate: Option<Rate>,

    /// Requests a token may send back to back before --rate applies.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub burst: u32,

    /// How Retry-After is written on 429s and faults (always rounded up).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = RetryAfterFormat::Seconds)]
    pub retry_after_format: RetryAfterFormat,

    /// Fraction of Graph requests answered 503 or 504 (half each), from 0 to 1.
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_fraction)]
    pub fail_rate: f64,

    /// Retry-After sent with injected 503s; 0 sends none. 504s never carry one.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = units::parse_duration)]
    pub fault_retry_after: Duration,

    /// Delay added before every Graph response, e.g. 50ms.
    #[arg(long, value_name = "DURATION", default_value = "0ms", value_parser = units::parse_duration)]
    pub latency: Duration,

    /// Success body: the docs' {"value": {..., "provider"}} or the schema's unwrapped object.
    #[arg(long, value_enum, value_name = "SHAPE", default_value_t = ResponseShape::Docs)]
    pub response_shape: ResponseShape,

    /// Append every request as one JSON line to FILE (truncated at start). Tokens are logged as
    /// labels (t1, t2, ...), and nothing from the token endpoint's form but grant type and client id.
    #[arg(long, value_name = "FILE")]
    pub request_log: Option<PathBuf>,

    /// Lifetime of the tokens the token endpoint issues.
    #[arg(long, value_name = "DURATION", default_value = "3599s", value_parser = units::parse_duration)]
    pub token_lifetime: Duration,

    /// Require this client id at the token endpoint.
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,

    /// Require the client secret held in FILE (trimmed) at the token endpoint. Never on argv.
    #[arg(long, value_name = "FILE")]
    pub client_secret_file: Option<PathBuf>,

    /// Accept any non-empty bearer token at the Graph endpoint, not only issued ones.
    #[arg(long)]
    pub accept_any_token: bool,

    /// Seed for the fault injection, to make a run reproducible.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// Serve a tenant of identities to look up, and check actions against it: N synthetic ones
    /// (user000000@contoso.com, ...; every 5th cloud-only, every 4th with Okta, 1-4 privileged),
    /// or those in FILE (JSONL or a JSON array of identityAccounts objects; ./N for a file named
    /// like a number). Adds GET identityAccounts (paged, or $filter by SID), identityAccounts/{id},
    /// users/{upn|id} and roleManagement/directory/roleAssignments.
    #[arg(long, value_name = "FILE|N", value_parser = parse_identity_source)]
    pub identities: Option<IdentitySource>,

    /// Identities per page of the identityAccounts list (with --identities).
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = parse_page_size)]
    pub page_size: usize,

    /// Answer role assignment reads 403, as Graph does for an app without
    /// RoleManagement.Read.Directory (to rehearse --protect-privileged failing).
    #[arg(long)]
    pub deny_role_reads: bool,

    /// With --identities N: add PIM eligibility, role-assignable groups, custom roles (one
    /// labelled privileged) and administrative units (one restricted-management) to the
    /// synthetic tenant, to rehearse --protect-privileged (issue 20).
    #[arg(long)]
    pub privileged_access: bool,

    /// With --privileged-access: this many more PIM-eligible assignments (identities 100, ...).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        requires = "privileged_access"
    )]
    pub eligible: usize,

    /// With --privileged-access: this many more role-assignable groups holding a privileged role.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        requires = "privileged_access"
    )]
    pub role_groups: usize,

    /// Answer the reads that need one of these permissions 403 (comma separated), as Graph does
    /// for an app without it, to rehearse --protect-privileged failing.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub deny_permission: Vec<String>,

    /// Issue client-credentials tokens whose `roles` claim holds these permissions (comma
    /// separated), to rehearse `auth` and a run that lacks one; invokeAction answers 403 without
    /// SecurityIdentitiesActions.ReadWrite.All. Default: opaque tokens that say nothing.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub token_roles: Option<Vec<String>>,

    /// Grant delegated sign-ins (--auth device-code or browser) these permissions only (comma
    /// separated). Default: what the sign-in asks for.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub delegated_permissions: Option<Vec<String>>,

    /// With --identities: how long after an accepted action its effect shows in the reads
    /// (isEnabled, the user's accountEnabled and signInSessionsValidFromDateTime), as a sensor
    /// carries an action out some time after Graph accepted it.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = units::parse_duration)]
    pub effect_delay: Duration,

    /// With --identities: accept actions on identity or account ids matching PATTERN (a regular
    /// expression) and never carry them out, as a sensor without rights in AD does.
    // Boxed: a compiled pattern would make every `Command` as large as this one.
    #[arg(long, value_name = "PATTERN", value_parser = parse_pattern)]
    pub effect_never: Option<Box<regex::Regex>>,
}

impl MockArgs {
    /// The server's configuration; reads the client secret file.
    pub fn into_config(self) -> anyhow::Result<MockConfig> {
        let client_secret = match &self.client_secret_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read the client secret file {}", path.display())
                })?;
                let secret = text.trim();
                anyhow::ensure!(
                    !secret.is_empty(),
                    "the client secret file {} is empty",
                    path.display()
                );
                Some(secret.to_owned())
            }
            None => None,
        };
        let tenant = match &self.identities {
            None => None,
            Some(IdentitySource::Synthetic(n)) if self.privileged_access => Some(
                Tenant::synthetic(*n).with_privileged_access(super::PrivilegedSeed {
                    eligible: self.eligible,
                    groups: self.role_groups,
                }),
            ),
            Some(IdentitySource::Synthetic(n)) => Some(Tenant::synthetic(*n)),
            Some(IdentitySource::File(path)) => Some(Tenant::load(path)?),
        };
        Ok(MockConfig {
            rate: self.rate,
            burst: self.burst,
            retry_after_format: self.retry_after_format,
            fail_rate: self.fail_rate,
            fault_retry_after: (!self.fault_retry_after.is_zero())
                .then_some(self.fault_retry_after),
            latency: self.latency,
            response_shape: self.response_shape,
            request_log: self.request_log,
            record: false,
            token_lifetime: self.token_lifetime,
            client_id: self.client_id,
            client_secret,
            static_tokens: Vec::new(),
            accept_any_token: self.accept_any_token,
            seed: self.seed,
            tenant,
            page_size: self.page_size,
            deny_role_reads: self.deny_role_reads,
            denied_permissions: self.deny_permission,
            sign_in: super::SignInMock {
                app_roles: self.token_roles,
                delegated_permissions: self.delegated_permissions,
                ..super::SignInMock::default()
            },
            effect_delay: self.effect_delay,
            effect_never: self.effect_never.map(|pattern| *pattern),
            ..MockConfig::default()
        })
    }
}

/// `graph-remediate mock`: binds, prints `mock Graph listening on http://ADDR` on stdout, and
/// serves until `shutdown` resolves.
pub async fn run_cli(
    args: MockArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_cli_with_output(args, std::io::stdout(), shutdown).await
}

/// [`run_cli`], printing the listening line to `out` instead of stdout (for in-process tests).
pub async fn run_cli_with_output(
    args: MockArgs,
    mut out: impl Write + Send,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listen = args.listen;
    let config = args.into_config()?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    // One write, so the line arrives whole for whoever parses it.
    out.write_all(format!("mock Graph listening on http://{addr}\n").as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")?;
    drop(out);
    tracing::info!(%addr, "mock Graph listening");
    serve_until(listener, config, shutdown)
        .await
        .context("the mock server failed")
}

/// A socket address on loopback; `localhost:PORT` means `127.0.0.1:PORT`.
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    let addr = match text.strip_prefix("localhost:") {
        Some(port) => port
            .parse::<u16>()
            .map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .map_err(|_| format!("{text:?} has no valid port"))?,
        None => text.parse::<SocketAddr>().map_err(|_| {
            format!("{text:?} is not an address: write IP:PORT, e.g. 127.0.0.1:8080")
        })?,
    };
    if !is_loopback(addr.ip()) {
        return Err(format!(
            "{addr} is not a loopback address: the mock accepts made-up credentials, so it only \
             listens on 127.0.0.1 or [::1]"
        ));
    }
    Ok(addr)
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// A count of synthetic identities (all digits), or else a file.
fn parse_identity_source(text: &str) -> Result<IdentitySource, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("write a number of synthetic identities or a file of identities".to_owned());
    }
    if !trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(IdentitySource::File(PathBuf::from(text)));
    }
    match trimmed.parse::<usize>() {
        Ok(n) if n <= MAX_SYNTHETIC => Ok(IdentitySource::Synthetic(n)),
        _ => Err(format!(
            "{trimmed} synthetic identities is more than the mock seeds (at most {MAX_SYNTHETIC}); \
             for a file named like a number write ./{trimmed}"
        )),
    }
}

fn parse_pattern(text: &str) -> Result<Box<regex::Regex>, String> {
    regex::Regex::new(text)
        .map(Box::new)
        .map_err(|error| format!("not a regular expression: {error}"))
}

fn parse_page_size(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "{text:?} is not a page size: write a whole number, at least 1"
        )),
    }
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    let value: f64 = text.trim().parse().map_err(|_| {
        format!("{text:?} is not a number: write a fraction from 0 to 1, e.g. 0.05")
    })?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "{value} is outside 0 to 1: write a fraction, e.g. 0.05 for 5%"
        ))
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        mock: MockArgs,
    }

    fn parse(args: &[&str]) -> Result<MockArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("mock").chain(args.iter().copied())).map(|c| c.mock)
    }

    #[test]
    fn command_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_spec() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        let config = config.into_config().unwrap();
        assert_eq!(config.rate, None);
        assert_eq!(config.burst, 1);
        assert_eq!(config.retry_after_format, RetryAfterFormat::Seconds);
        assert_eq!(config.fail_rate, 0.0);
        assert_eq!(config.fault_retry_after, Some(Duration::from_secs(1)));
        assert_eq!(config.latency, Duration::ZERO);
        assert_eq!(config.response_shape, ResponseShape::Docs);
        assert_eq!(config.token_lifetime, Duration::from_secs(3599));
        assert!(!config.accept_any_token);
        assert_eq!(config.client_secret, None);
        assert!(config.tenant.is_none());
        assert_eq!(config.page_size, 100);
    }

    #[test]
    fn issue_18_token_roles_and_delegated_permissions_take_comma_separated_lists() {
        let config = parse(&[
            "--token-roles",
            "SecurityIdentitiesAccount.Read.All,User.Read.All",
            "--delegated-permissions",
            "SecurityIdentitiesActions.ReadWrite.All",
        ])
        .unwrap()
        .into_config()
        .unwrap();
        assert_eq!(
            config.sign_in.app_roles.unwrap(),
            ["SecurityIdentitiesAccount.Read.All", "User.Read.All"]
        );
        assert_eq!(
            config.sign_in.delegated_permissions.unwrap(),
            ["SecurityIdentitiesActions.ReadWrite.All"]
        );
        let defaults = parse(&[]).unwrap().into_config().unwrap();
        assert!(defaults.sign_in.app_roles.is_none());
    }

    #[test]
    fn identities_are_a_number_or_a_file() {
        let args = parse(&["--identities", "250", "--page-size", "7"]).unwrap();
        assert_eq!(args.identities, Some(IdentitySource::Synthetic(250)));
        let config = args.into_config().unwrap();
        assert_eq!(config.tenant, Some(Tenant::synthetic(250)));
        assert_eq!(config.page_size, 7);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tenant.jsonl");
        std::fs::write(&file, "{\"id\":\"a\"}\n{\"id\":\"b\"}\n").unwrap();
        let args = parse(&["--identities", file.to_str().unwrap()]).unwrap();
        assert_eq!(args.identities, Some(IdentitySource::File(file.clone())));
        assert_eq!(args.into_config().unwrap().tenant.unwrap().len(), 2);
        assert_eq!(
            parse(&["--identities", "./100"]).unwrap().identities,
            Some(IdentitySource::File(PathBuf::from("./100")))
        );

        let missing = parse(&["--identities", "/nonexistent/tenant.jsonl"]).unwrap();
        let error = format!("{:#}", missing.into_config().unwrap_err());
        assert!(error.contains("cannot read the identities file"), "{error}");
        for bad in [
            &["--identities", ""][..],
            &["--identities", "99999999999"],
            &["--page-size", "0"],
            &["--page-size", "many"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn parses_every_flag() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "  hunter2\n").unwrap();
        let args = parse(&[
            "--listen",
            "localhost:0",
            "--rate",
            "50/s",
            "--burst",
            "5",
            "--retry-after-format",
            "http-date",
            "--fail-rate",
            "0.25",
            "--fault-retry-after",
            "0",
            "--latency",
            "20ms",
            "--response-shape",
            "schema",
            "--request-log",
            "log.jsonl",
            "--token-lifetime",
            "1s",
            "--client-id",
            "app",
            "--client-secret-file",
            secret.to_str().unwrap(),
            "--accept-any-token",
            "--seed",
            "9",
        ])
        .unwrap();
        assert_eq!(args.listen, "127.0.0.1:0".parse().unwrap());
        let config = args.into_config().unwrap();
        assert_eq!(config.rate.unwrap().to_string(), "50/s");
        assert_eq!(config.burst, 5);
        assert_eq!(config.retry_after_format, RetryAfterFormat::HttpDate);
        assert_eq!(config.fail_rate, 0.25);
        assert_eq!(config.fault_retry_after, None);
        assert_eq!(config.latency, Duration::from_millis(20));
        assert_eq!(config.response_shape, ResponseShape::Schema);
        assert_eq!(config.request_log, Some(PathBuf::from("log.jsonl")));
        assert_eq!(config.token_lifetime, Duration::from_secs(1));
        assert_eq!(config.client_id.as_deref(), Some("app"));
        assert_eq!(config.client_secret.as_deref(), Some("hunter2"));
        assert!(config.accept_any_token);
        assert_eq!(config.seed, Some(9));
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn refuses_remote_addresses_and_bad_values() {
        for bad in [
            &["--listen", "0.0.0.0:8080"][..],
            &["--listen", "192.168.1.5:80"],
            &["--listen", "[::]:80"],
            &["--burst", "0"],
            &["--fail-rate", "1.5"],
            &["--rate", "0/s"],
            &["--retry-after-format", "minutes"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
        let message = parse(&["--listen", "0.0.0.0:8080"])
            .unwrap_err()
            .to_string();
        assert!(message.contains("not a loopback address"), "{message}");
        assert!(parse(&["--listen", "[::1]:0"]).is_ok());
    }

    #[test]
    fn an_unreadable_or_empty_secret_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let args = parse(&["--client-secret-file", missing.to_str().unwrap()]).unwrap();
        assert!(format!("{:#}", args.into_config().unwrap_err()).contains("cannot read"));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let args = parse(&["--client-secret-file", empty.to_str().unwrap()]).unwrap();
        assert!(
            args.into_config()
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
    }
}
