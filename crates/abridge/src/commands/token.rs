//! `abridge token create|revoke|list`: the API's bearer tokens.

use std::process::ExitCode;

use abridge_core::Settings;

use crate::cli::TokenCommand;
use crate::context;

pub async fn run(settings: &Settings, command: TokenCommand) -> anyhow::Result<ExitCode> {
    let store = context::store(settings).await?;
    match command {
        TokenCommand::Create { tenant, json } => {
            let made = abridge_api::auth::create_token(&store, &tenant).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "id": made.id,
                        "tenant": made.tenant.name,
                        "token": made.token,
                        "webhook_secret": made.tenant.webhook_secret,
                    })
                );
            } else {
                println!("token:          {}", made.token);
                println!("id:             {}", made.id);
                println!(
                    "tenant:         {}{}",
                    made.tenant.name,
                    if made.tenant.created { " (new)" } else { "" }
                );
                println!("webhook secret: {}", made.tenant.webhook_secret);
                eprintln!(
                    "the token is shown only now; revoke it with `abridge token revoke {}`",
                    made.id
                );
            }
        }
        TokenCommand::Revoke { token } => {
            if !abridge_api::auth::revoke_token(&store, &token).await? {
                anyhow::bail!("revoke token: no unrevoked token matches {token:?}");
            }
            println!("token revoked");
        }
        TokenCommand::List { tenant, json } => {
            let tokens = store.list_tokens(tenant.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string(&tokens)?);
            } else {
                for t in &tokens {
                    println!(
                        "{}  {}  created {}{}",
                        t.id,
                        t.tenant,
                        t.created_at
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        t.revoked_at
                            .map(|r| format!(
                                "  revoked {}",
                                r.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                            ))
                            .unwrap_or_default()
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
