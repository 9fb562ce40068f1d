//! `abridge token create|revoke|list`: the API's bearer tokens.

use std::process::ExitCode;

use abridge_core::Settings;

use crate::cli::TokenCommand;
use crate::context;

pub async fn run(settings: &Settings, command: TokenCommand) -> anyhow::Result<ExitCode> {
    let store = context::store(settings).await?;
    match command {
        TokenCommand::Create {
            tenant,
            operator: _,
            json,
        } => {
            let made = abridge_api::auth::create_token(&store, tenant.as_deref()).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "id": made.id,
                        "tenant": made.tenant.as_ref().map(|t| &t.name),
                        "operator": made.tenant.is_none(),
                        "token": made.token,
                        "webhook_secret": made.tenant.as_ref().map(|t| &t.webhook_secret),
                    })
                );
            } else {
                println!("token:          {}", made.token);
                println!("id:             {}", made.id);
                match &made.tenant {
                    Some(t) => {
                        println!(
                            "tenant:         {}{}",
                            t.name,
                            if t.created { " (new)" } else { "" }
                        );
                        println!("webhook secret: {}", t.webhook_secret);
                    }
                    None => println!("operator:       yes (every tenant's batches, the fleet)"),
                }
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
                        t.tenant.as_deref().unwrap_or("(operator)"),
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
