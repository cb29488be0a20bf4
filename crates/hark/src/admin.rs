//! `hark admin`: the operator's commands for accounts, projects and keys. Every change
//! is audited in the same transaction by the store.

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use hark_core::plan::LimitOverrides;
use hark_core::{AccountId, ApiKeyId, Clock, Plan, ProjectId, UserId};
use hark_server::config::Config;
use hark_store::{
    AccountStore, Actor, AuditStore, BillingStore, KeyStore, MemberStore, NewAccount, NewProject,
    SqlStore, UserStore,
};
use serde_json::{json, Value};
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct AdminArgs {
    /// Print one JSON object instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Create the first account with its Owner, a default project and a first key.
    Init {
        #[arg(long)]
        email: String,
        #[arg(long)]
        account_name: String,
        #[arg(long, default_value = "free")]
        plan: Plan,
    },
    #[command(subcommand)]
    Account(AccountCommand),
    #[command(subcommand)]
    Project(ProjectCommand),
    #[command(subcommand)]
    Key(KeyCommand),
    #[command(subcommand)]
    Audit(AuditCommand),
    #[command(subcommand)]
    User(UserCommand),
    /// Usage and spend from the hourly rollups, also of deleted accounts:
    /// `--account ID` or `--all`, `[--from] [--to]` (ISO 8601 UTC or dates), `--csv`.
    Usage {
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        account: Option<AccountId>,
        /// Every account, grouped by account.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        /// hour, day or month.
        #[arg(long, default_value = "day")]
        granularity: String,
        #[arg(long)]
        csv: bool,
    },
    /// Mail waiting for delivery (invites, ownership notices) when SMTP is not configured.
    Outbox {
        /// Only mail not yet marked sent.
        #[arg(long)]
        unsent: bool,
        /// Mark these outbox entries as delivered by hand.
        #[arg(long = "mark-sent", value_name = "ID")]
        mark_sent: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Support: change a user's email address.
    ChangeEmail { old: String, new: String },
    /// Set a user's password, read from the first line of standard input.
    SetPassword { email: String },
}

#[derive(Subcommand, Debug)]
pub enum AccountCommand {
    /// Change an account's plan; `--limit name=N` sets custom (Enterprise) limits.
    SetPlan {
        account: AccountId,
        plan: Plan,
        #[arg(long = "limit", value_name = "NAME=N")]
        limits: Vec<String>,
    },
    Show {
        account: AccountId,
    },
    /// Grant credit (or correct with a negative amount): `--amount 50.00`, exact
    /// decimal text in the configured currency. A prepaid account refused for a
    /// negative balance works again as soon as its balance is not negative.
    Credit {
        account: AccountId,
        #[arg(long, allow_hyphen_values = true)]
        amount: String,
        #[arg(long)]
        note: String,
    },
    /// The credit balance, the month's spend and the credit ledger.
    Balance {
        account: AccountId,
    },
    /// Support: make a member the Owner; the previous Owner becomes Admin, and billing
    /// notices go to the new Owner.
    TransferOwnership {
        account: AccountId,
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ProjectCommand {
    Create {
        #[arg(long)]
        account: AccountId,
        #[arg(long)]
        name: String,
    },
    List {
        #[arg(long)]
        account: AccountId,
    },
    /// Show a project, including its webhook signing secret.
    Show { project: ProjectId },
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Create an API key; its secret is printed here only.
    Create {
        #[arg(long)]
        project: ProjectId,
        #[arg(long)]
        name: String,
        /// Lifetime such as 30d, 12h, 45m or 3600s.
        #[arg(long, value_parser = parse_duration_ms)]
        expires_in: Option<i64>,
    },
    /// List a project's keys (masked).
    List {
        #[arg(long)]
        project: ProjectId,
    },
    /// Revoke a key; it stops working at once.
    Revoke { key: ApiKeyId },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the hash chain of an account's audit log (or the installation's).
    Verify {
        #[arg(long)]
        account: Option<AccountId>,
    },
    /// Print an account's audit log as NDJSON.
    List {
        #[arg(long)]
        account: Option<AccountId>,
    },
}

fn parse_duration_ms(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: i64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 30d, 12h, 45m or 3600s"))?;
    let unit_ms = match unit {
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("unknown unit '{unit}' in '{s}' (use s, m, h or d)")),
    };
    if n <= 0 {
        return Err("the duration must be positive".into());
    }
    n.checked_mul(unit_ms)
        .ok_or_else(|| "duration too long".to_string())
}

fn print(json_mode: bool, value: Value, text: impl FnOnce(&Value) -> String) {
    if json_mode {
        println!("{value}");
    } else {
        println!("{}", text(&value));
    }
}

fn key_json(k: &hark_store::ApiKeyRecord) -> Value {
    json!({
        "id": k.id, "project_id": k.project_id, "name": k.name, "masked": k.masked, "created_by": k.created_by,
        "created_at": k.created_at, "expires_at": k.expires_at, "revoked_at": k.revoked_at, "last_used_at": k.last_used_at,
    })
}

struct Ops {
    store: SqlStore,
    master_key: hark_core::seal::MasterKey,
    clock: Arc<dyn Clock>,
}

impl Ops {
    fn new_project(&self, name: &str) -> NewProject {
        hark_server::provisioning::new_project(&self.master_key, name)
    }

    async fn create_key(
        &self,
        project: ProjectId,
        name: &str,
        expires_in: Option<i64>,
    ) -> anyhow::Result<(hark_store::ApiKeyRecord, String)> {
        let (record, secret) = hark_server::provisioning::issue_api_key(
            &self.store,
            &self.master_key,
            self.clock.as_ref(),
            project,
            name,
            expires_in,
            &Actor::Operator,
        )
        .await?;
        Ok((record, secret.into_inner()))
    }
}

pub async fn run(config: &Config, clock: Arc<dyn Clock>, args: AdminArgs) -> anyhow::Result<()> {
    let master_key = hark_server::load_master_key(config)?;
    let store = hark_server::open_store(config, clock.clone()).await?;
    let ops = Ops {
        store,
        master_key,
        clock,
    };
    let result = execute(config, &ops, args).await;
    ops.store.close().await;
    result
}

async fn execute(config: &Config, ops: &Ops, args: AdminArgs) -> anyhow::Result<()> {
    let j = args.json;
    let store = &ops.store;
    match args.command {
        AdminCommand::Init {
            email,
            account_name,
            plan,
        } => {
            if !email.contains('@') {
                bail!("'{email}' is not an email address");
            }
            let account_id = AccountId::new();
            let boot = store
                .create_account(
                    NewAccount {
                        id: account_id,
                        name: account_name,
                        plan,
                        owner_id: UserId::new(),
                        owner_email: email,
                        project: ops.new_project("Default project"),
                    },
                    &Actor::Operator,
                )
                .await?;
            let (key, secret) = ops.create_key(boot.project.id, "Default key", None).await?;
            let owner = store
                .get_user(boot.owner)
                .await?
                .ok_or_else(|| anyhow!("the Owner just created is missing"))?;
            // An Owner who already had a password (a person in several accounts) keeps it.
            let set_password_url = match owner.password_hash {
                Some(_) => None,
                None => Some(
                    hark_server::manage::links::issue_set_password_link(
                        store,
                        ops.clock.as_ref(),
                        &config.effective_public_base_url(None),
                        boot.owner,
                    )
                    .await?,
                ),
            };
            print(
                j,
                json!({"account_id": account_id, "project_id": boot.project.id, "api_key_id": key.id, "api_key": secret, "owner_id": boot.owner, "set_password_url": set_password_url}),
                |v| {
                    let mut text = format!(
                        "account {}\nproject {}\nAPI key (shown only now): {}",
                        v["account_id"].as_str().unwrap_or_default(),
                        v["project_id"].as_str().unwrap_or_default(),
                        v["api_key"].as_str().unwrap_or_default()
                    );
                    if let Some(url) = v["set_password_url"].as_str() {
                        text.push_str(&format!(
                            "\nThe Owner sets a password at this link (once, within 7 days):\n    {url}"
                        ));
                    }
                    text
                },
            );
        }
        AdminCommand::Account(AccountCommand::SetPlan {
            account,
            plan,
            limits,
        }) => {
            let mut overrides = LimitOverrides::default();
            for l in &limits {
                overrides.set(l)?;
            }
            let acct = store
                .set_plan(account, plan, overrides, &Actor::Operator)
                .await?;
            hark_server::control::notify_credentials_changed(&config.data_dir).await;
            print(
                j,
                json!({"id": acct.id, "plan": acct.plan, "limits": acct.limits}),
                |v| format!("{v:#}"),
            );
        }
        AdminCommand::Account(AccountCommand::Show { account }) => {
            let acct = store
                .get_account(account)
                .await?
                .ok_or_else(|| anyhow!("no account {account}"))?;
            let members = store.members(account).await?;
            let value = json!({
                "id": acct.id, "name": acct.name, "plan": acct.plan, "limits": acct.limits, "created_at": acct.created_at,
                "members": members.iter().map(|m| json!({"user_id": m.user_id, "email": m.email, "role": m.role})).collect::<Vec<_>>(),
            });
            print(j, value, |v| format!("{v:#}"));
        }
        AdminCommand::Account(AccountCommand::Credit {
            account,
            amount,
            note,
        }) => {
            let micros = hark_core::money::parse_amount(&amount)?;
            if micros == 0 {
                bail!("--amount must not be zero");
            }
            if note.trim().is_empty() {
                bail!("--note must say why the credit is given");
            }
            let change = store
                .grant_credit(
                    account,
                    micros,
                    hark_store::CreditKind::Operator,
                    note.trim(),
                    &Actor::Operator,
                )
                .await
                .map_err(|e| match e {
                    hark_store::StoreError::NotFound(_) => anyhow!("no account {account}"),
                    other => other.into(),
                })?;
            // Nodes forget the account's cached keys (which carry the refusal flag).
            hark_server::control::notify_credentials_changed(&config.data_dir).await;
            let fmt = hark_core::money::format_amount;
            print(
                j,
                json!({"account_id": account, "amount": fmt(micros), "balance_before": fmt(change.before), "balance": fmt(change.after), "currency": config.billing.currency}),
                |v| {
                    format!(
                        "credited {} {}; balance {} {}",
                        v["amount"].as_str().unwrap_or_default(),
                        v["currency"].as_str().unwrap_or_default(),
                        v["balance"].as_str().unwrap_or_default(),
                        v["currency"].as_str().unwrap_or_default()
                    )
                },
            );
        }
        AdminCommand::Account(AccountCommand::Balance { account }) => {
            let fmt = hark_core::money::format_amount;
            let balance = store.balance(account).await?;
            let credits = store.credits(account).await?;
            let value = json!({
                "account_id": account, "currency": config.billing.currency,
                "balance": fmt(balance.balance), "month_spend": fmt(balance.month_spend), "refused_for_balance": balance.blocked,
                "credits": credits.iter().map(|c| json!({"amount": fmt(c.amount), "kind": c.kind, "note": c.note, "actor": c.actor, "created_at": hark_server::manage::usage::ts(c.created_at)})).collect::<Vec<_>>(),
            });
            print(j, value, |v| format!("{v:#}"));
        }
        AdminCommand::Usage {
            account,
            all,
            from,
            to,
            granularity,
            csv,
        } => {
            let mut pairs = vec![("granularity".to_string(), granularity)];
            pairs.extend(from.map(|f| ("from".to_string(), f)));
            pairs.extend(to.map(|t| ("to".to_string(), t)));
            let input =
                hark_server::manage::usage::ReportInput::from_pairs(&pairs, ops.clock.now_ms())
                    .map_err(|e| anyhow!("{e}"))?;
            let report = hark_server::manage::usage::operator_report(
                store,
                &config.billing.currency,
                if all { None } else { account },
                &input,
                ops.clock.now_ms(),
            )
            .await
            .map_err(|e| anyhow!("{e}"))?;
            if csv {
                print!("{}", hark_server::manage::usage::report_csv(&report));
            } else {
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
        }
        AdminCommand::Project(ProjectCommand::Create { account, name }) => {
            let project = store
                .create_project(account, ops.new_project(&name), &Actor::Operator)
                .await?;
            print(
                j,
                json!({"id": project.id, "account_id": project.account_id, "name": project.name}),
                |v| format!("project {}", v["id"].as_str().unwrap_or_default()),
            );
        }
        AdminCommand::Project(ProjectCommand::List { account }) => {
            let projects = store.list_projects(account).await?;
            let items: Vec<Value> = projects
                .iter()
                .map(|p| json!({"id": p.id, "name": p.name, "created_at": p.created_at}))
                .collect();
            print(j, json!({"projects": items}), |v| {
                v["projects"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        format!(
                            "{}  {}",
                            p["id"].as_str().unwrap_or_default(),
                            p["name"].as_str().unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        AdminCommand::Project(ProjectCommand::Show { project }) => {
            let p = store
                .get_project(project)
                .await?
                .ok_or_else(|| anyhow!("no project {project}"))?;
            let sealed = store
                .project_webhook_secret(project)
                .await?
                .ok_or_else(|| anyhow!("no project {project}"))?;
            let secret = ops
                .master_key
                .open(&sealed, &project.to_string())
                .context("unsealing the webhook secret")?;
            print(
                j,
                json!({"id": p.id, "account_id": p.account_id, "name": p.name, "created_at": p.created_at, "webhook_signing_secret": secret}),
                |v| format!("{v:#}"),
            );
        }
        AdminCommand::Key(KeyCommand::Create {
            project,
            name,
            expires_in,
        }) => {
            let (key, secret) = ops.create_key(project, &name, expires_in).await?;
            // A running server on SQLite hears of the new key only this way (it may
            // remember the digest as unknown for a few seconds).
            hark_server::control::notify_credentials_changed(&config.data_dir).await;
            print(
                j,
                json!({"id": key.id, "key": secret, "project_id": key.project_id, "name": key.name, "expires_at": key.expires_at}),
                |v| {
                    format!(
                        "key {} (shown only now): {}",
                        v["id"].as_str().unwrap_or_default(),
                        v["key"].as_str().unwrap_or_default()
                    )
                },
            );
        }
        AdminCommand::Key(KeyCommand::List { project }) => {
            let keys = store.list_api_keys(project).await?;
            print(
                j,
                json!({"keys": keys.iter().map(key_json).collect::<Vec<_>>()}),
                |v| {
                    v["keys"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|k| {
                            format!(
                                "{}  {}  {}{}",
                                k["id"].as_str().unwrap_or_default(),
                                k["masked"].as_str().unwrap_or_default(),
                                k["name"].as_str().unwrap_or_default(),
                                if k["revoked_at"].is_null() {
                                    ""
                                } else {
                                    "  (revoked)"
                                }
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                },
            );
        }
        AdminCommand::Key(KeyCommand::Revoke { key }) => {
            let record = store.revoke_api_key(key, &Actor::Operator).await?;
            let notified = hark_server::control::notify_credentials_changed(&config.data_dir).await;
            let mut value = key_json(&record);
            value["running_server_notified"] = json!(notified);
            print(j, value, |v| {
                format!("revoked {}", v["id"].as_str().unwrap_or_default())
            });
        }
        AdminCommand::Audit(AuditCommand::Verify { account }) => {
            match store.verify_audit_chain(account).await? {
                Ok(n) => print(j, json!({"ok": true, "entries": n}), |v| {
                    format!("audit chain intact ({} entries)", v["entries"])
                }),
                Err(problem) => {
                    print(j, json!({"ok": false, "problem": problem}), |v| {
                        format!(
                            "audit chain BROKEN: {}",
                            v["problem"].as_str().unwrap_or_default()
                        )
                    });
                    bail!(
                        "the audit log of {} has been tampered with",
                        account
                            .map(|a| a.to_string())
                            .unwrap_or_else(|| "the installation".into())
                    );
                }
            }
        }
        AdminCommand::Account(AccountCommand::TransferOwnership { account, to }) => {
            let new_owner = store
                .transfer_ownership(account, &to, &Actor::Operator)
                .await?;
            print(
                j,
                json!({"account_id": account, "owner_id": new_owner, "owner_email": hark_store::normalize_email(&to)}),
                |v| {
                    format!(
                        "{} is now the Owner of {account}; the previous Owner is an Admin",
                        v["owner_email"].as_str().unwrap_or_default()
                    )
                },
            );
        }
        AdminCommand::User(UserCommand::ChangeEmail { old, new }) => {
            if !new.contains('@') {
                bail!("'{new}' is not an email address");
            }
            let user = store.change_email(&old, &new, &Actor::Operator).await?;
            print(j, json!({"user_id": user.id, "email": user.email}), |v| {
                format!(
                    "user {} is now {}",
                    v["user_id"].as_str().unwrap_or_default(),
                    v["email"].as_str().unwrap_or_default()
                )
            });
        }
        AdminCommand::User(UserCommand::SetPassword { email }) => {
            let user = store
                .user_by_email(&email)
                .await?
                .ok_or_else(|| anyhow!("no user {email}"))?;
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            let password = line.trim_end_matches(['\r', '\n']);
            hark_core::password::validate(password)?;
            let hash = hark_core::password::hash(password)?;
            store
                .set_password(user.id, &hash, None, &Actor::Operator)
                .await?;
            print(j, json!({"user_id": user.id, "email": user.email}), |v| {
                format!(
                    "password set for {}",
                    v["email"].as_str().unwrap_or_default()
                )
            });
        }
        AdminCommand::Outbox { unsent, mark_sent } => {
            for id in &mark_sent {
                store.mark_mail_sent(id).await?;
            }
            for m in store.outbox(unsent).await? {
                let v = json!({"id": m.id, "to": m.mail.to, "subject": m.mail.subject, "body": m.mail.body,
                    "created_at": m.created_at, "sent_at": m.sent_at});
                if j {
                    println!("{v}");
                } else {
                    println!(
                        "--- {} to {} ({})\nSubject: {}\n\n{}",
                        m.id,
                        m.mail.to,
                        if m.sent_at.is_some() {
                            "sent"
                        } else {
                            "unsent"
                        },
                        m.mail.subject,
                        m.mail.body
                    );
                }
            }
        }
        AdminCommand::Audit(AuditCommand::List { account }) => {
            for e in store.audit_entries(account).await? {
                println!(
                    "{}",
                    json!({"seq": e.seq, "at": e.created_at, "actor": e.actor, "action": e.action, "target": e.target, "details": e.details, "hash": e.hash})
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_duration_ms;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("30d"), Ok(30 * 86_400_000));
        assert_eq!(parse_duration_ms("90"), Ok(90_000));
        assert!(parse_duration_ms("5w").is_err());
        assert!(parse_duration_ms("0s").is_err());
        assert!(parse_duration_ms("x").is_err());
    }
}
