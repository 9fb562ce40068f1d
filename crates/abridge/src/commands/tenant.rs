//! `abridge tenant set|show|list|costs`: the operator's settings for each API tenant, and
//! what each one's model requests cost.

use std::process::ExitCode;

use abridge_core::{Backend, Settings};
use abridge_store::tenants::{TenantPolicy, TenantView};
use anyhow::Context as _;

use crate::cli::{TenantCommand, TenantSetArgs};
use crate::context;

pub async fn run(settings: &Settings, command: TenantCommand) -> anyhow::Result<ExitCode> {
    let store = context::store(settings).await?;
    match command {
        TenantCommand::Set(args) => {
            let name = args.name.clone();
            let current = store.tenant(&name).await?.with_context(|| {
                format!("no tenant {name:?}: `abridge token create --tenant {name}` makes it")
            })?;
            let policy = apply(current.policy, args)?;
            let queue = context::queue(settings)?;
            abridge_control::set_tenant_policy(&store, &queue, &name, &policy).await?;
            let view = store.tenant(&name).await?.context("read the tenant back")?;
            print_one(&view);
        }
        TenantCommand::Show { name, json } => {
            let view = store
                .tenant(&name)
                .await?
                .with_context(|| format!("no tenant {name:?}"))?;
            if json {
                println!("{}", serde_json::to_string(&view)?);
            } else {
                print_one(&view);
            }
        }
        TenantCommand::Costs {
            name,
            operator: _,
            days,
            json,
        } => {
            if let Some(name) = &name {
                store
                    .tenant(name)
                    .await?
                    .with_context(|| format!("no tenant {name:?}"))?;
            }
            let spend = store.tenant_spend(name.as_deref(), days).await?;
            if json {
                let days: Vec<_> = spend
                    .iter()
                    .map(|d| serde_json::json!({"day": d.day.to_string(), "spend": d.spend}))
                    .collect();
                println!("{}", serde_json::json!({"tenant": name, "days": days}));
            } else {
                let who = name.as_deref().unwrap_or("the operator");
                let total: f64 = spend.iter().map(|d| d.spend.cost_usd).sum();
                println!("{who}: ${total:.4} over the last {days} days");
                for d in &spend {
                    let s = &d.spend;
                    println!(
                        "  {}  ${:.4}  {} requests, {} tokens in, {} out{}",
                        d.day,
                        s.cost_usd,
                        s.requests,
                        s.input_tokens,
                        s.output_tokens,
                        if s.unpriced {
                            "  (and a model without a price)"
                        } else {
                            ""
                        }
                    );
                }
            }
        }
        TenantCommand::List { json } => {
            let all = store.tenants(None).await?;
            if json {
                println!("{}", serde_json::to_string(&all)?);
            } else {
                for view in &all {
                    print_one(view);
                    println!();
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `policy` with the flags given in `args` applied (0 or `default` clears a setting).
pub fn apply(mut policy: TenantPolicy, args: TenantSetArgs) -> anyhow::Result<TenantPolicy> {
    let limit = |n: u64| (n > 0).then_some(n);
    if let Some(w) = args.weight {
        policy.weight = w;
    }
    if let Some(n) = args.max_in_flight {
        policy.max_in_flight = limit(u64::from(n)).map(|n| n.min(i32::MAX as u64) as i32);
    }
    if let Some(n) = args.max_queued {
        policy.max_queued = limit(n).map(|n| n.min(i64::MAX as u64) as i64);
    }
    if let Some(n) = args.max_batches_per_minute {
        policy.max_batches_per_minute = limit(u64::from(n)).map(|n| n.min(i32::MAX as u64) as i32);
    }
    if let Some(n) = args.daily_tokens {
        policy.daily_tokens = limit(n).map(|n| n.min(i64::MAX as u64) as i64);
    }
    if let Some(names) = args.backends {
        policy.backends = if names == ["default"] {
            None
        } else {
            Some(
                names
                    .iter()
                    .map(|n| n.parse::<Backend>().map_err(anyhow::Error::msg))
                    .collect::<anyhow::Result<_>>()
                    .context("--backends")?,
            )
        };
    }
    if let Some(p) = args.max_priority {
        policy.max_priority = if p == "any" {
            None
        } else {
            Some(
                p.parse()
                    .map_err(|e| anyhow::anyhow!("--max-priority: {e}"))?,
            )
        };
    }
    if let Some(days) = args.retention_days {
        policy.retention_days = (days > 0).then_some(days as i32);
    }
    if let Some(models) = args.models {
        policy.models = if models == ["default"] {
            None
        } else {
            Some(models)
        };
    }
    Ok(policy)
}

fn print_one(view: &TenantView) {
    let p = &view.policy;
    let or = |v: Option<String>, none: &str| v.unwrap_or_else(|| none.to_owned());
    println!("tenant:                 {}", view.name);
    println!("weight:                 {}", p.weight);
    println!(
        "backends:               {}",
        or(
            p.backends
                .as_ref()
                .map(|b| b.iter().map(|b| b.as_str()).collect::<Vec<_>>().join(",")),
            "the fleet's default"
        )
    );
    println!(
        "models:                 {}",
        or(
            p.models.as_ref().map(|m| m.join(",")),
            "the configured ones"
        )
    );
    println!(
        "daily tokens:           {}",
        or(p.daily_tokens.map(|n| n.to_string()), "no limit")
    );
    println!(
        "max in flight:          {}",
        or(p.max_in_flight.map(|n| n.to_string()), "no limit")
    );
    println!(
        "max queued:             {}",
        or(p.max_queued.map(|n| n.to_string()), "no limit")
    );
    println!(
        "max priority:           {}",
        or(p.max_priority.map(|p| p.as_str().to_owned()), "any")
    );
    println!(
        "max batches per minute: {}",
        or(p.max_batches_per_minute.map(|n| n.to_string()), "no limit")
    );
    println!(
        "retention days:         {}",
        or(p.retention_days.map(|n| n.to_string()), "the fleet's")
    );
}
