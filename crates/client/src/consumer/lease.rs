//! Leases in a DynamoDB table, with the KCL's schema, so the official KCL
//! tools can read them and ours can read theirs.
//!
//! Every change is a conditional write: a take succeeds only if the lease
//! still has the counter and owner the taker saw, a renewal only if the
//! renewer still owns it, a checkpoint only if the checkpointer still owns
//! it (or is finishing a graceful hand-off). So two workers never both hold
//! one shard.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue,
    ScalarAttributeType, TableStatus,
};

use super::ConsumerError;

pub const LEASE_KEY: &str = "leaseKey";
pub const LEASE_OWNER: &str = "leaseOwner";
pub const LEASE_COUNTER: &str = "leaseCounter";
pub const CHECKPOINT: &str = "checkpoint";
pub const CHECKPOINT_SUB: &str = "checkpointSubSequenceNumber";
pub const OWNER_SWITCHES: &str = "ownerSwitchesSinceCheckpoint";
pub const PARENTS: &str = "parentShardId";
pub const CHILDREN: &str = "childShardIds";
pub const STARTING_HASH_KEY: &str = "startingHashKey";
pub const ENDING_HASH_KEY: &str = "endingHashKey";
/// The previous owner while a stolen lease is handed over (KCL 3.x's name).
pub const CHECKPOINT_OWNER: &str = "checkpointOwner";

/// The checkpoint sentinels the KCL writes.
pub const TRIM_HORIZON: &str = "TRIM_HORIZON";
pub const LATEST: &str = "LATEST";
pub const AT_TIMESTAMP: &str = "AT_TIMESTAMP";
pub const SHARD_END: &str = "SHARD_END";

/// One lease: who processes a shard, and how far it got.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lease {
    /// The shard id.
    pub key: String,
    pub owner: Option<String>,
    pub counter: u64,
    /// A sequence number or one of the sentinels.
    pub checkpoint: String,
    pub checkpoint_sub: u64,
    pub owner_switches: u64,
    pub parents: Vec<String>,
    pub children: Vec<String>,
    pub starting_hash_key: Option<String>,
    pub ending_hash_key: Option<String>,
    pub checkpoint_owner: Option<String>,
}

impl Lease {
    pub fn is_finished(&self) -> bool {
        self.checkpoint == SHARD_END
    }

    fn from_item(item: &HashMap<String, AttributeValue>) -> Option<Lease> {
        let s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
        let n = |k: &str| {
            item.get(k)
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse::<u64>().ok())
        };
        let ss = |k: &str| {
            item.get(k)
                .and_then(|v| v.as_ss().ok())
                .cloned()
                .unwrap_or_default()
        };
        Some(Lease {
            key: s(LEASE_KEY)?,
            owner: s(LEASE_OWNER),
            counter: n(LEASE_COUNTER).unwrap_or(0),
            checkpoint: s(CHECKPOINT).unwrap_or_else(|| TRIM_HORIZON.to_string()),
            checkpoint_sub: n(CHECKPOINT_SUB).unwrap_or(0),
            owner_switches: n(OWNER_SWITCHES).unwrap_or(0),
            parents: ss(PARENTS),
            // Early 2.x KCLs wrote `childShardId`.
            children: if item.contains_key(CHILDREN) {
                ss(CHILDREN)
            } else {
                ss("childShardId")
            },
            starting_hash_key: s(STARTING_HASH_KEY),
            ending_hash_key: s(ENDING_HASH_KEY),
            checkpoint_owner: s(CHECKPOINT_OWNER),
        })
    }

    fn to_item(&self) -> HashMap<String, AttributeValue> {
        let mut m = HashMap::new();
        let s = |v: &str| AttributeValue::S(v.to_string());
        let n = |v: u64| AttributeValue::N(v.to_string());
        m.insert(LEASE_KEY.into(), s(&self.key));
        if let Some(o) = &self.owner {
            m.insert(LEASE_OWNER.into(), s(o));
        }
        m.insert(LEASE_COUNTER.into(), n(self.counter));
        m.insert(CHECKPOINT.into(), s(&self.checkpoint));
        m.insert(CHECKPOINT_SUB.into(), n(self.checkpoint_sub));
        m.insert(OWNER_SWITCHES.into(), n(self.owner_switches));
        if !self.parents.is_empty() {
            m.insert(PARENTS.into(), AttributeValue::Ss(self.parents.clone()));
        }
        if !self.children.is_empty() {
            m.insert(CHILDREN.into(), AttributeValue::Ss(self.children.clone()));
        }
        if let Some(h) = &self.starting_hash_key {
            m.insert(STARTING_HASH_KEY.into(), s(h));
        }
        if let Some(h) = &self.ending_hash_key {
            m.insert(ENDING_HASH_KEY.into(), s(h));
        }
        m
    }
}

/// Whether an SDK error is DynamoDB's ConditionalCheckFailedException.
fn is_condition_failure<E: ProvideErrorMetadata>(e: &E) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

fn dynamo_error<E: ProvideErrorMetadata + std::fmt::Debug>(e: E) -> ConsumerError {
    let text = format!(
        "{}: {}",
        e.code().unwrap_or("error"),
        e.message()
            .map(String::from)
            .unwrap_or_else(|| format!("{e:?}"))
    );
    if super::permanent_code(e.code()) {
        ConsumerError::Permanent(format!("lease table: {text}"))
    } else {
        ConsumerError::LeaseTable(text)
    }
}

/// The outcome of a conditional lease write.
pub enum Conditional<T> {
    Done(T),
    /// Another worker changed the lease first.
    Lost,
}

/// The lease table of one application.
#[derive(Debug, Clone)]
pub struct LeaseTable {
    client: Client,
    name: String,
}

impl LeaseTable {
    pub fn new(client: Client, name: impl Into<String>) -> LeaseTable {
        LeaseTable {
            client,
            name: name.into(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates the table (on-demand billing, `leaseKey` hash key) unless it
    /// exists, and waits until it is ACTIVE.
    pub async fn ensure(&self) -> Result<(), ConsumerError> {
        let exists = match self
            .client
            .describe_table()
            .table_name(&self.name)
            .send()
            .await
        {
            Ok(_) => true,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                false
            }
            Err(e) => return Err(dynamo_error(e)),
        };
        if !exists {
            let created = self
                .client
                .create_table()
                .table_name(&self.name)
                .billing_mode(BillingMode::PayPerRequest)
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(LEASE_KEY)
                        .key_type(KeyType::Hash)
                        .build()
                        .map_err(|e| ConsumerError::LeaseTable(e.to_string()))?,
                )
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(LEASE_KEY)
                        .attribute_type(ScalarAttributeType::S)
                        .build()
                        .map_err(|e| ConsumerError::LeaseTable(e.to_string()))?,
                )
                .send()
                .await;
            match created {
                Ok(_) => {}
                // Another worker created it at the same moment.
                Err(e) if e.code() == Some("ResourceInUseException") => {}
                Err(e) => return Err(dynamo_error(e)),
            }
        }
        for _ in 0..600 {
            let d = self
                .client
                .describe_table()
                .table_name(&self.name)
                .send()
                .await
                .map_err(dynamo_error)?;
            if d.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(ConsumerError::LeaseTable(format!(
            "table {} did not become ACTIVE",
            self.name
        )))
    }

    /// Every lease, read consistently.
    pub async fn list(&self) -> Result<Vec<Lease>, ConsumerError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.name)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(dynamo_error)?;
            out.extend(page.items().iter().filter_map(Lease::from_item));
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(out),
            }
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Lease>, ConsumerError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.name)
            .key(LEASE_KEY, AttributeValue::S(key.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(dynamo_error)?;
        Ok(out.item().and_then(Lease::from_item))
    }

    /// Creates a lease unless one exists for the shard.
    pub async fn create_if_absent(&self, lease: &Lease) -> Result<bool, ConsumerError> {
        match self
            .client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(lease.to_item()))
            .condition_expression("attribute_not_exists(leaseKey)")
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(dynamo_error(e)),
        }
    }

    /// Takes a lease last seen as `seen`. When `handoff` is set (the owner is
    /// alive and the lease is stolen for balance), the previous owner stays
    /// `checkpointOwner` until it has checkpointed and let go.
    pub async fn take(
        &self,
        seen: &Lease,
        me: &str,
        handoff: bool,
    ) -> Result<Conditional<Lease>, ConsumerError> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.name)
            .key(LEASE_KEY, AttributeValue::S(seen.key.clone()))
            .expression_attribute_values(":me", AttributeValue::S(me.to_string()))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":seen", AttributeValue::N(seen.counter.to_string()))
            .return_values(ReturnValue::AllNew);
        // ownerSwitchesSinceCheckpoint counts changes from one owner to
        // another, as the KCL counts them.
        const TAKE: &str = "SET leaseOwner = :me ADD leaseCounter :one, ownerSwitchesSinceCheckpoint :one REMOVE checkpointOwner";
        const TAKE_FREE: &str = "SET leaseOwner = :me ADD leaseCounter :one REMOVE checkpointOwner";
        const HANDOFF: &str = "SET leaseOwner = :me, checkpointOwner = :old ADD leaseCounter :one, ownerSwitchesSinceCheckpoint :one";
        req = match &seen.owner {
            Some(old) => req
                .update_expression(match (handoff, old == me) {
                    (true, _) => HANDOFF,
                    (false, true) => TAKE_FREE,
                    (false, false) => TAKE,
                })
                // A lease already being handed over is not stolen again.
                .condition_expression(if handoff {
                    "leaseCounter = :seen AND leaseOwner = :old AND attribute_not_exists(checkpointOwner)"
                } else {
                    "leaseCounter = :seen AND leaseOwner = :old"
                })
                .expression_attribute_values(":old", AttributeValue::S(old.clone())),
            None => req
                .update_expression(TAKE_FREE)
                .condition_expression("leaseCounter = :seen AND attribute_not_exists(leaseOwner)"),
        };
        self.conditional_update(req).await
    }

    /// Renews a held lease: bumps the counter if `me` still holds it with
    /// the counter it knows.
    pub async fn renew(&self, held: &Lease, me: &str) -> Result<Conditional<Lease>, ConsumerError> {
        let req = self
            .client
            .update_item()
            .table_name(&self.name)
            .key(LEASE_KEY, AttributeValue::S(held.key.clone()))
            .update_expression("ADD leaseCounter :one")
            .condition_expression("leaseCounter = :seen AND leaseOwner = :me")
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":seen", AttributeValue::N(held.counter.to_string()))
            .expression_attribute_values(":me", AttributeValue::S(me.to_string()))
            .return_values(ReturnValue::AllNew);
        self.conditional_update(req).await
    }

    /// Records a checkpoint, if `me` owns the lease (or is the previous
    /// owner finishing a hand-off).
    pub async fn checkpoint(
        &self,
        key: &str,
        me: &str,
        checkpoint: &str,
        sub: u64,
    ) -> Result<Conditional<()>, ConsumerError> {
        let req = self
            .client
            .update_item()
            .table_name(&self.name)
            .key(LEASE_KEY, AttributeValue::S(key.to_string()))
            .update_expression("SET checkpoint = :c, checkpointSubSequenceNumber = :s, ownerSwitchesSinceCheckpoint = :zero")
            .condition_expression(
                "(leaseOwner = :me AND attribute_not_exists(checkpointOwner)) OR checkpointOwner = :me",
            )
            .expression_attribute_values(":c", AttributeValue::S(checkpoint.to_string()))
            .expression_attribute_values(":s", AttributeValue::N(sub.to_string()))
            .expression_attribute_values(":zero", AttributeValue::N("0".into()))
            .expression_attribute_values(":me", AttributeValue::S(me.to_string()));
        match req.send().await {
            Ok(_) => Ok(Conditional::Done(())),
            Err(e) if is_condition_failure(&e) => Ok(Conditional::Lost),
            Err(e) => Err(dynamo_error(e)),
        }
    }

    /// Ends a hand-off whose previous owner never let go.
    pub async fn clear_handoff(
        &self,
        key: &str,
        me: &str,
        prev: &str,
    ) -> Result<(), ConsumerError> {
        match self
            .client
            .update_item()
            .table_name(&self.name)
            .key(LEASE_KEY, AttributeValue::S(key.to_string()))
            .update_expression("REMOVE checkpointOwner")
            .condition_expression("leaseOwner = :me AND checkpointOwner = :prev")
            .expression_attribute_values(":me", AttributeValue::S(me.to_string()))
            .expression_attribute_values(":prev", AttributeValue::S(prev.to_string()))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(dynamo_error(e)),
        }
    }

    /// Deletes the lease of a finished shard (its checkpoint is SHARD_END).
    pub async fn delete_finished(&self, key: &str) -> Result<(), ConsumerError> {
        match self
            .client
            .delete_item()
            .table_name(&self.name)
            .key(LEASE_KEY, AttributeValue::S(key.to_string()))
            .condition_expression("checkpoint = :end")
            .expression_attribute_values(":end", AttributeValue::S(SHARD_END.to_string()))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(dynamo_error(e)),
        }
    }

    /// Records the children of a finished shard on its lease.
    pub async fn set_children(&self, key: &str, children: &[String]) -> Result<(), ConsumerError> {
        if children.is_empty() {
            return Ok(());
        }
        self.client
            .update_item()
            .table_name(&self.name)
            .key(LEASE_KEY, AttributeValue::S(key.to_string()))
            .update_expression("SET childShardIds = :c")
            .condition_expression("attribute_exists(leaseKey)")
            .expression_attribute_values(":c", AttributeValue::Ss(children.to_vec()))
            .send()
            .await
            .map_err(dynamo_error)?;
        Ok(())
    }

    /// Gives a lease back: `me` stops owning it (graceful shutdown, or a
    /// finished shard), or stops being the hand-off's previous owner.
    pub async fn release(&self, key: &str, me: &str) -> Result<(), ConsumerError> {
        let owner = self
            .client
            .update_item()
            .table_name(&self.name)
            .key(LEASE_KEY, AttributeValue::S(key.to_string()))
            .update_expression("REMOVE leaseOwner")
            .condition_expression("leaseOwner = :me AND attribute_not_exists(checkpointOwner)")
            .expression_attribute_values(":me", AttributeValue::S(me.to_string()))
            .send()
            .await;
        match owner {
            Ok(_) => return Ok(()),
            Err(e) if is_condition_failure(&e) => {}
            Err(e) => return Err(dynamo_error(e)),
        }
        let handoff = self
            .client
            .update_item()
            .table_name(&self.name)
            .key(LEASE_KEY, AttributeValue::S(key.to_string()))
            .update_expression("REMOVE checkpointOwner")
            .condition_expression("checkpointOwner = :me")
            .expression_attribute_values(":me", AttributeValue::S(me.to_string()))
            .send()
            .await;
        match handoff {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(dynamo_error(e)),
        }
    }

    async fn conditional_update(
        &self,
        req: aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
    ) -> Result<Conditional<Lease>, ConsumerError> {
        match req.send().await {
            Ok(out) => Ok(out
                .attributes()
                .and_then(Lease::from_item)
                .map(Conditional::Done)
                .unwrap_or(Conditional::Lost)),
            Err(e) if is_condition_failure(&e) => Ok(Conditional::Lost),
            Err(e) => Err(dynamo_error(e)),
        }
    }
}
