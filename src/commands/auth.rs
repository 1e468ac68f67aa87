//! `auth` (SPEC section 9, issue 18): sign in as a run would and say who that is and what the
//! token may do; send nothing to Graph. With an input, also the permissions that run needs and
//! which of them the token lacks, so a responder learns before the incident's first action that
//! the app registration is missing a consent, not after a 403 halfway through the batch.

use std::future::Future;
use std::io::Write;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use secrecy::ExposeSecret as _;
use serde_json::json;

use crate::config::{AuthConfig, AuthInput, PlanFormat};
use crate::graph::auth::token_tenant_and_app;
use crate::graph::permissions::{Granted, Needs, Permission, claims, how_to_grant};
use crate::input::InputSource;
use crate::runner::shutdown;
use crate::{ExitStatus, output};

use super::connect::{connect_unless_interrupted, sign_in};
use super::prepare::{read_input, report_bad_rows};
use super::validate::{Keep, check_rows};

/// What `auth` found, as printed.
struct Found {
    credential: &'static str,
    tenant: Option<String>,
    app: Option<String>,
    user: Option<String>,
    expires_at: Option<SystemTime>,
    granted: Granted,
    /// With an input: what its run needs.
    needs: Option<Needs>,
    missing: Vec<Permission>,
}

/// `graph-remediate auth [INPUT] [run's options]`.
/// `shutdown` resolves on the first Ctrl-C or SIGTERM, which ends a sign-in still waiting.
pub async fn auth(
    config: AuthConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<ExitStatus> {
    let interrupt = shutdown::listen(shutdown);
    let AuthConfig {
        run: config,
        input: given,
        format,
    } = config;
    // Read as the run would read them, so that `auth` refuses what the run would refuse.
    let protect = config.protect_files.read()?;
    let config = config.guarded_by(protect)?;
    let input = if given == AuthInput::Given {
        Some(read_input(&config.input, &interrupt).await?)
    } else {
        None
    };
    let checked = match &input {
        Some(input) => {
            let source = input.config.source.clone();
            let options = input.config.options.clone();
            let (unlisted, verify) = (input.config.unlisted, config.verify);
            let checked = tokio::task::spawn_blocking(move || {
                check_rows(&source, &options, unlisted, None, None, verify, Keep::Plan)
            })
            .await
            .context("checking the input stopped unexpectedly")??;
            if !checked.plan.is_clean() {
                report_bad_rows(&checked.plan);
                return Ok(ExitStatus::InputError);
            }
            Some(checked)
        }
        None => None,
    };
    let privileged = config.guardrails.privileged;
    let needs = match &checked {
        Some(checked) => Needs::of(
            true,
            !checked.wanted.is_empty(),
            checked.wanted.reads_users(),
            privileged,
        ),
        None => Needs::of(true, false, false, privileged),
    };
    let input_config = match &input {
        Some(input) => input.config.clone(),
        // No input: a rehearsal's tenant is made of nothing (a path that names no file).
        None => crate::config::InputConfig {
            source: InputSource::File(std::path::PathBuf::new()),
            ..config.input.clone()
        },
    };
    let connection =
        connect_unless_interrupted(&interrupt, sign_in(&config.graph, &input_config, &needs))
            .await?;
    let token = connection
        .tokens
        .current()
        .await
        .context("cannot get an access token")?;
    let (token_tenant, token_app) = token_tenant_and_app(token.expose_secret());
    let signed_in = connection.tokens.signed_in();
    let expires_at = match &signed_in {
        Some(signed_in) => Some(signed_in.expires_at),
        None => claims(token.expose_secret())
            .and_then(|c| c.get("exp").and_then(serde_json::Value::as_u64))
            .and_then(|exp| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(exp))),
    };
    let granted = connection.granted.clone();
    let missing = if checked.is_some() {
        granted.missing(&needs)
    } else {
        Vec::new()
    };
    let credentials = &config.graph.credentials;
    let found = Found {
        credential: connection.tokens.describe(),
        tenant: credentials.tenant_id.clone().or(token_tenant),
        app: credentials.client_id.clone().or(token_app),
        user: signed_in.and_then(|s| s.user),
        expires_at,
        granted,
        needs: checked.is_some().then_some(needs),
        missing,
    };
    if let Some(mock) = connection.mock {
        mock.shutdown().await;
    }
    let text = match format {
        PlanFormat::Text => render_text(&found),
        PlanFormat::Json => format!("{}\n", render_json(&found)),
    };
    let stdout = std::io::stdout();
    let mut stdout = stdout.lock();
    write!(stdout, "{text}")
        .or_else(super::validate::ignore_broken_pipe)
        .context("cannot write the sign-in")?;
    Ok(if found.missing.is_empty() {
        ExitStatus::Success
    } else {
        ExitStatus::StoppedEarly
    })
}

fn names(permissions: &[Permission]) -> Vec<&'static str> {
    permissions.iter().map(|p| p.name()).collect()
}

fn render_text(found: &Found) -> String {
    use std::fmt::Write as _;
    let unknown = || "not known".to_owned();
    let mut text = String::new();
    let _ = writeln!(text, "credential   {}", found.credential);
    let _ = writeln!(
        text,
        "tenant       {}",
        found.tenant.clone().unwrap_or_else(unknown)
    );
    let _ = writeln!(
        text,
        "app          {}",
        found.app.clone().unwrap_or_else(unknown)
    );
    if let Some(user) = &found.user {
        let _ = writeln!(text, "user         {user}");
    }
    let expires = match found.expires_at {
        Some(at) => {
            let left = at
                .duration_since(SystemTime::now())
                .map(|left| Duration::from_secs(left.as_secs()))
                .unwrap_or_default();
            format!(
                "{} (in {})",
                humantime::format_rfc3339_seconds(at),
                humantime::format_duration(left)
            )
        }
        None => unknown(),
    };
    let _ = writeln!(text, "expires      {expires}");
    let held = match found.granted.names() {
        Some(names) if names.is_empty() => "none".to_owned(),
        Some(names) => names.join(", "),
        None => "cannot tell (the token carries no roles or scp claim)".to_owned(),
    };
    let _ = writeln!(text, "permissions  {held}");
    if let Some(needs) = &found.needs {
        let needed: Vec<Permission> = needs.iter().collect();
        let _ = writeln!(text, "run needs    {}", names(&needed).join(", "));
        if found.missing.is_empty() {
            let verdict = if found.granted.names().is_some() {
                "none"
            } else {
                "cannot tell; a missing permission would show as 403"
            };
            let _ = writeln!(text, "missing      {verdict}");
        } else {
            let delegated = found.granted.is_delegated();
            for permission in &found.missing {
                let _ = writeln!(
                    text,
                    "missing      {} (for {}): {}",
                    permission.name(),
                    permission.needed_for(),
                    how_to_grant(*permission, delegated)
                );
            }
        }
    }
    text
}

fn render_json(found: &Found) -> serde_json::Value {
    json!({
        "credential": found.credential,
        "tenant": found.tenant,
        "app": found.app,
        "user": found.user,
        "expiresAt": found.expires_at.map(output::journal::rfc3339),
        "permissions": found.granted.names(),
        "delegated": found.granted.is_delegated(),
        "needs": found.needs.as_ref().map(|needs| needs.iter().map(Permission::name).collect::<Vec<_>>()),
        "missing": found.needs.as_ref().map(|_| names(&found.missing)),
    })
}
