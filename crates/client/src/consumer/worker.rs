//! The worker: lease renewal, taking and stealing, shard discovery, and one
//! task per leased shard.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::error::ProvideErrorMetadata;
use parking_lot::Mutex;
use rand::seq::SliceRandom;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, error, info, warn};

use super::lease::{AT_TIMESTAMP, Conditional, LATEST, Lease, LeaseTable, TRIM_HORIZON};
use super::shard::{ShardContext, ShardEvent, ShardTask, Stop};
use super::{
    ConsumerError, InitialPosition, RecordProcessor, WorkerConfig, kinesis_error, kinesis_failure,
};

/// What a worker holds, for operators and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerState {
    /// Shards whose leases this worker holds and processes, sorted.
    pub held: Vec<String>,
    /// Workers seen holding live leases in the last balancing round (this one included).
    pub workers: usize,
    /// Leases of unfinished shards in the table.
    pub leases: usize,
}

/// A running worker.
pub struct Worker {
    task: JoinHandle<()>,
    shutdown: watch::Sender<bool>,
    state: Arc<Mutex<WorkerState>>,
    /// Set if the worker stopped by itself on a permanent error.
    fatal: watch::Receiver<Option<ConsumerError>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("state", &*self.state.lock())
            .finish()
    }
}

struct Held {
    lease: Lease,
    stop: watch::Sender<Option<Stop>>,
    valid_until: Arc<Mutex<Instant>>,
    stopping: bool,
}

type HeldMap = Arc<Mutex<HashMap<String, Held>>>;

/// Aborts a task when dropped, so that renewals end with the coordinator
/// however it ends (returning, or aborted as in a crash).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Coordinator<P, F> {
    kinesis: aws_sdk_kinesis::Client,
    table: LeaseTable,
    cfg: Arc<WorkerConfig>,
    factory: F,
    /// Leases held, shared with the renewal task.
    held: HeldMap,
    /// Per lease: the counter and owner last seen, and since when.
    observed: HashMap<String, (u64, Option<String>, Instant)>,
    tasks: JoinSet<()>,
    /// Which shard each task processes, to clean up after a panicking processor.
    task_shards: HashMap<tokio::task::Id, String>,
    events_tx: mpsc::UnboundedSender<ShardEvent>,
    state: Arc<Mutex<WorkerState>>,
    /// The enhanced fan-out consumer, once registered.
    consumer_arn: Option<String>,
    _processor: std::marker::PhantomData<fn() -> P>,
}

impl Worker {
    /// Starts a worker on the current tokio runtime. `factory` makes one
    /// record processor per shard the worker comes to hold.
    pub fn start<P, F>(
        kinesis: aws_sdk_kinesis::Client,
        dynamodb: aws_sdk_dynamodb::Client,
        cfg: WorkerConfig,
        factory: F,
    ) -> Worker
    where
        P: RecordProcessor,
        F: Fn(&str) -> P + Send + Sync + 'static,
    {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let state = Arc::new(Mutex::new(WorkerState::default()));
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let coordinator = Coordinator {
            kinesis,
            table: LeaseTable::new(dynamodb, cfg.application_name.clone()),
            cfg: Arc::new(cfg),
            factory,
            held: Arc::new(Mutex::new(HashMap::new())),
            observed: HashMap::new(),
            tasks: JoinSet::new(),
            task_shards: HashMap::new(),
            events_tx,
            state: state.clone(),
            consumer_arn: None,
            _processor: std::marker::PhantomData,
        };
        let (fatal_tx, fatal) = watch::channel(None);
        let task = tokio::spawn(async move {
            if let Some(e) = coordinator.run(shutdown_rx, events_rx).await {
                error!(error = %e, "worker stopped on a permanent error");
                let _ = fatal_tx.send(Some(e));
            }
        });
        Worker {
            task,
            shutdown,
            state,
            fatal,
        }
    }

    /// Resolves, with the error, if the worker stops by itself because the
    /// service refused something no retry can fix (see
    /// [`ConsumerError::is_permanent`]); pending for as long as it runs.
    pub async fn failed(&self) -> ConsumerError {
        let mut rx = self.fatal.clone();
        loop {
            if let Some(e) = rx.borrow_and_update().clone() {
                return e;
            }
            if rx.changed().await.is_err() {
                // Stopped without an error (shut down): never resolves.
                return std::future::pending().await;
            }
        }
    }

    /// What the worker holds now.
    pub fn state(&self) -> WorkerState {
        self.state.lock().clone()
    }

    /// Stops gracefully: each processor gets `shutdown_requested` (to
    /// checkpoint), then the leases are given back for other workers.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// Stops at once, as a crash would: nothing is checkpointed or given
    /// back, so other workers take the leases after the failover time.
    pub fn abort(self) {
        self.task.abort();
    }
}

impl<P, F> Coordinator<P, F>
where
    P: RecordProcessor,
    F: Fn(&str) -> P + Send + Sync + 'static,
{
    fn me(&self) -> &str {
        &self.cfg.worker_id
    }

    /// Runs until shut down, or until a permanent error, which it returns.
    async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        mut events: mpsc::UnboundedReceiver<ShardEvent>,
    ) -> Option<ConsumerError> {
        let mut delay = Duration::from_millis(200);
        loop {
            match self.table.ensure().await {
                Ok(()) => break,
                Err(e) if e.is_permanent() => return Some(e),
                Err(e) => warn!(error = %e, "lease table not ready; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return None,
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        if let Some(name) = self.cfg.fan_out_consumer.clone() {
            let mut delay = Duration::from_millis(200);
            loop {
                match self.register_consumer(&name).await {
                    Ok(arn) => {
                        self.consumer_arn = Some(arn);
                        break;
                    }
                    Err(e) if e.is_permanent() => return Some(e),
                    Err(e) => warn!(error = %e, "cannot register the fan-out consumer; retrying"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => return None,
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
        let failover = self.cfg.failover_time;
        // Renewals run on their own, so that a slow Scan or shard sync never
        // delays them past the failover time.
        let renewals = AbortOnDrop(tokio::spawn(renew_loop(
            self.table.clone(),
            self.cfg.clone(),
            self.held.clone(),
        )));
        let mut take = tokio::time::interval((failover / 4).max(Duration::from_millis(50)));
        let mut sync =
            tokio::time::interval(self.cfg.shard_sync_interval.max(Duration::from_millis(100)));
        for t in [&mut take, &mut sync] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        let mut fatal = None;
        while fatal.is_none() {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = sync.tick() => {
                    match self.sync_shards().await {
                        Err(e) if e.is_permanent() => fatal = Some(e),
                        Err(e) => warn!(error = %e, "shard sync failed"),
                        Ok(()) => {}
                    }
                }
                _ = take.tick() => {
                    match self.take_leases().await {
                        Err(e) if e.is_permanent() => fatal = Some(e),
                        Err(e) => warn!(error = %e, "taking leases failed"),
                        Ok(()) => {}
                    }
                }
                Some(ev) = events.recv() => fatal = self.on_event(ev),
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.task_finished(joined).await;
                }
            }
            self.publish_state(None, None);
        }
        self.shutdown(&mut events, renewals).await;
        fatal
    }

    fn publish_state(&self, workers: Option<usize>, leases: Option<usize>) {
        let mut held: Vec<String> = self
            .held
            .lock()
            .iter()
            .filter(|(_, h)| !h.stopping)
            .map(|(k, _)| k.clone())
            .collect();
        held.sort();
        let mut s = self.state.lock();
        s.held = held;
        if let Some(w) = workers {
            s.workers = w;
        }
        if let Some(l) = leases {
            s.leases = l;
        }
    }

    /// Applies a shard task's event; a permanent failure is returned.
    fn on_event(&mut self, ev: ShardEvent) -> Option<ConsumerError> {
        match ev {
            ShardEvent::Failed(e) => return Some(e),
            ShardEvent::Finished(shard) => {
                debug!(shard = %shard, "finished");
                if let Some(h) = self.held.lock().get_mut(&shard) {
                    h.stopping = true;
                }
            }
            ShardEvent::Exited(shard) => {
                self.held.lock().remove(&shard);
            }
        }
        None
    }

    async fn shutdown(
        &mut self,
        events: &mut mpsc::UnboundedReceiver<ShardEvent>,
        renewals: AbortOnDrop,
    ) {
        info!(worker = %self.me(), "shutting down");
        for h in self.held.lock().values() {
            let _ = h.stop.send(Some(Stop::Shutdown));
        }
        // Renewals go on while the processors finish, so that no other worker
        // takes a lease that is still being processed here.
        let deadline =
            tokio::time::Instant::now() + self.cfg.failover_time.max(Duration::from_secs(5));
        while !self.tasks.is_empty() {
            tokio::select! {
                Some(joined) = self.tasks.join_next_with_id() => self.task_finished(joined).await,
                _ = tokio::time::sleep_until(deadline) => {
                    warn!("record processors did not stop in time");
                    self.tasks.abort_all();
                    while self.tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
        while let Ok(ev) = events.try_recv() {
            if let ShardEvent::Finished(s) = ev {
                self.held.lock().remove(&s);
            }
        }
        // Nothing is processed any more: stop renewing, then give back.
        drop(renewals);
        let me = self.cfg.worker_id.clone();
        let mut mine: HashSet<String> = self.held.lock().drain().map(|(k, _)| k).collect();
        // Also leases still in our name whose processing had already stopped
        // (a renewal that came too late under load).
        if let Ok(leases) = self.table.list().await {
            mine.extend(
                leases
                    .into_iter()
                    .filter(|l| l.owner.as_deref() == Some(me.as_str()))
                    .map(|l| l.key),
            );
        }
        for shard in mine {
            if let Err(e) = self.table.release(&shard, &me).await {
                warn!(shard = %shard, error = %e, "could not give the lease back");
            }
        }
        self.publish_state(None, None);
    }

    /// Registers the stream consumer (or finds it) and waits until it is ACTIVE.
    async fn register_consumer(&self, name: &str) -> Result<String, ConsumerError> {
        let err = |e: String| ConsumerError::Kinesis(e);
        let summary = self
            .kinesis
            .describe_stream_summary()
            .stream_name(&self.cfg.stream_name)
            .send()
            .await
            .map_err(|e| kinesis_failure("DescribeStreamSummary", &e))?;
        let stream_arn = summary
            .stream_description_summary()
            .map(|d| d.stream_arn().to_string())
            .unwrap_or_default();
        match self
            .kinesis
            .register_stream_consumer()
            .stream_arn(&stream_arn)
            .consumer_name(name)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == Some("ResourceInUseException") => {}
            Err(e) => return Err(kinesis_failure("RegisterStreamConsumer", &e)),
        }
        for _ in 0..300 {
            let d = self
                .kinesis
                .describe_stream_consumer()
                .stream_arn(&stream_arn)
                .consumer_name(name)
                .send()
                .await
                .map_err(|e| err(kinesis_error(&e)))?;
            if let Some(c) = d.consumer_description()
                && c.consumer_status().as_str() == "ACTIVE"
            {
                return Ok(c.consumer_arn().to_string());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(err(format!("consumer {name} did not become ACTIVE")))
    }

    /// Creates leases for shards that have none.
    async fn sync_shards(&mut self) -> Result<(), ConsumerError> {
        let mut shards = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = self.kinesis.list_shards();
            req = match &token {
                Some(t) => req.next_token(t),
                None => req.stream_name(&self.cfg.stream_name),
            };
            let out = req
                .send()
                .await
                .map_err(|e| kinesis_failure("ListShards", &e))?;
            shards.extend(out.shards().iter().cloned());
            token = out.next_token().map(String::from);
            if token.is_none() {
                break;
            }
        }
        let existing: HashSet<String> = self
            .table
            .list()
            .await?
            .into_iter()
            .map(|l| l.key)
            .collect();
        // Ancestors of leased shards are done (their leases may have been
        // cleaned up): they never get a lease again.
        let parents_of: HashMap<&str, Vec<&str>> = shards
            .iter()
            .map(|s| {
                let p: Vec<&str> = s
                    .parent_shard_id()
                    .into_iter()
                    .chain(s.adjacent_parent_shard_id())
                    .collect();
                (s.shard_id(), p)
            })
            .collect();
        let mut ancestors: HashSet<&str> = HashSet::new();
        let mut stack: Vec<&str> = existing.iter().map(String::as_str).collect();
        while let Some(k) = stack.pop() {
            for p in parents_of.get(k).into_iter().flatten() {
                if ancestors.insert(p) {
                    stack.push(p);
                }
            }
        }
        for s in &shards {
            if existing.contains(s.shard_id()) || ancestors.contains(s.shard_id()) {
                continue;
            }
            let parents: Vec<String> = s
                .parent_shard_id()
                .into_iter()
                .chain(s.adjacent_parent_shard_id())
                .map(String::from)
                .collect();
            let closed = s
                .sequence_number_range()
                .is_some_and(|r| r.ending_sequence_number().is_some());
            let checkpoint = if parents.iter().any(|p| existing.contains(p)) {
                // A child of a shard being consumed starts at its beginning.
                TRIM_HORIZON
            } else {
                match self.cfg.initial_position {
                    InitialPosition::TrimHorizon => TRIM_HORIZON,
                    InitialPosition::Latest if closed => continue,
                    InitialPosition::Latest => LATEST,
                    InitialPosition::AtTimestamp(_) => AT_TIMESTAMP,
                }
            };
            let lease = Lease {
                key: s.shard_id().to_string(),
                checkpoint: checkpoint.to_string(),
                parents,
                starting_hash_key: s
                    .hash_key_range()
                    .map(|h| h.starting_hash_key().to_string()),
                ending_hash_key: s.hash_key_range().map(|h| h.ending_hash_key().to_string()),
                ..Lease::default()
            };
            if self.table.create_if_absent(&lease).await? {
                debug!(shard = %lease.key, checkpoint, "lease created");
            }
        }
        Ok(())
    }

    /// Deletes the leases of finished shards once every child has started
    /// (checkpointed past its beginning), as the KCL's lease cleanup does, so
    /// the table does not grow with every reshard. A child treats a missing
    /// parent lease as finished.
    async fn clean_up_finished(&self, leases: &[Lease]) {
        let by_key: HashMap<&str, &Lease> = leases.iter().map(|l| (l.key.as_str(), l)).collect();
        for l in leases
            .iter()
            .filter(|l| l.is_finished() && !l.children.is_empty())
        {
            let started = l.children.iter().all(|c| {
                by_key.get(c.as_str()).is_some_and(|c| {
                    c.checkpoint != TRIM_HORIZON
                        && c.checkpoint != LATEST
                        && c.checkpoint != AT_TIMESTAMP
                })
            });
            if started && let Err(e) = self.table.delete_finished(&l.key).await {
                debug!(shard = %l.key, error = %e, "could not delete a finished lease");
            }
        }
    }

    /// Takes expired leases, and steals to balance, as the KCL does.
    async fn take_leases(&mut self) -> Result<(), ConsumerError> {
        let me = self.cfg.worker_id.clone();
        let leases = self.table.list().await?;
        let now = Instant::now();
        for l in &leases {
            let changed = self
                .observed
                .get(&l.key)
                .is_none_or(|(c, o, _)| *c != l.counter || *o != l.owner);
            if changed {
                self.observed
                    .insert(l.key.clone(), (l.counter, l.owner.clone(), now));
            }
        }
        let keys: HashSet<&str> = leases.iter().map(|l| l.key.as_str()).collect();
        self.observed.retain(|k, _| keys.contains(k.as_str()));
        self.clean_up_finished(&leases).await;
        let active: Vec<&Lease> = leases.iter().filter(|l| !l.is_finished()).collect();
        let expired = |l: &Lease| {
            l.owner.is_none()
                || self.observed.get(&l.key).is_some_and(|(_, _, since)| {
                    now.duration_since(*since) >= self.cfg.failover_time
                })
        };
        let mut counts: HashMap<String, usize> = HashMap::new();
        for l in &active {
            if let Some(o) = &l.owner
                && (o == &me || !expired(l))
            {
                *counts.entry(o.clone()).or_default() += 1;
            }
        }
        let (mine, held_keys): (usize, HashSet<String>) = {
            let held = self.held.lock();
            (
                held.values().filter(|h| !h.stopping).count(),
                held.keys().cloned().collect(),
            )
        };
        counts.insert(me.clone(), mine);
        let workers = counts.len();
        let target = active.len().div_ceil(workers.max(1));
        self.publish_state(Some(workers), Some(active.len()));
        if mine >= target {
            return Ok(());
        }
        let need = target - mine;
        let mut takeable: Vec<&Lease> = active
            .iter()
            .copied()
            .filter(|l| !held_keys.contains(&l.key))
            .filter(|l| {
                l.owner.as_deref() == Some(me.as_str())
                    || (expired(l) && l.owner.as_deref() != Some(me.as_str()))
            })
            .collect();
        takeable.shuffle(&mut rand::rng());
        let mut chosen: Vec<(Lease, bool)> = takeable
            .into_iter()
            .take(need)
            .map(|l| (l.clone(), false))
            .collect();
        if chosen.is_empty() {
            let most = counts
                .iter()
                .filter(|(o, _)| **o != me)
                .max_by_key(|(o, c)| (**c, (*o).clone()));
            if let Some((owner, &count)) = most {
                let steal = if count > target {
                    need.min(count - target)
                } else if count == target && mine + 1 < target {
                    1
                } else {
                    0
                };
                let steal = steal.min(self.cfg.max_leases_to_steal_at_once);
                let mut theirs: Vec<&Lease> = active
                    .iter()
                    .copied()
                    .filter(|l| {
                        l.owner.as_deref() == Some(owner.as_str())
                            && !expired(l)
                            && l.checkpoint_owner.is_none()
                    })
                    .collect();
                theirs.shuffle(&mut rand::rng());
                chosen = theirs
                    .into_iter()
                    .take(steal)
                    .map(|l| (l.clone(), true))
                    .collect();
            }
        }
        for (lease, handoff) in chosen {
            let sent = Instant::now();
            match self.table.take(&lease, &me, handoff).await? {
                Conditional::Done(taken) => {
                    info!(shard = %taken.key, from = ?lease.owner, handoff, "lease taken");
                    self.start_shard(taken, sent);
                }
                Conditional::Lost => {
                    debug!(shard = %lease.key, "another worker took the lease first")
                }
            }
        }
        Ok(())
    }

    /// Starts processing a lease taken by a request sent at `sent`.
    fn start_shard(&mut self, lease: Lease, sent: Instant) {
        let key = lease.key.clone();
        let (stop, stop_rx) = watch::channel(None);
        let valid_until = Arc::new(Mutex::new(sent + self.cfg.failover_time * 4 / 5));
        let task = ShardTask {
            ctx: ShardContext {
                kinesis: self.kinesis.clone(),
                table: self.table.clone(),
                cfg: self.cfg.clone(),
                lease: lease.clone(),
                consumer_arn: self.consumer_arn.clone(),
            },
            processor: (self.factory)(&lease.key),
            stop: stop_rx,
            valid_until: valid_until.clone(),
            events: self.events_tx.clone(),
            read_to: None,
        };
        self.held.lock().insert(
            lease.key.clone(),
            Held {
                lease,
                stop,
                valid_until,
                stopping: false,
            },
        );
        let handle = self.tasks.spawn(task.run());
        self.task_shards.insert(handle.id(), key);
    }

    /// A shard task ended. One that panicked (in the application's record
    /// processor) sent no goodbye: its lease is given back here.
    async fn task_finished(
        &mut self,
        joined: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
    ) {
        let id = match &joined {
            Ok((id, ())) => *id,
            Err(e) => e.id(),
        };
        let Some(shard) = self.task_shards.remove(&id) else {
            return;
        };
        if let Err(e) = joined
            && e.is_panic()
        {
            warn!(shard = %shard, "the record processor panicked; giving the lease back");
            self.held.lock().remove(&shard);
            let me = self.cfg.worker_id.clone();
            if let Err(e) = self.table.release(&shard, &me).await {
                warn!(shard = %shard, error = %e, "could not give the lease back");
            }
        }
    }
}

/// Renews the held leases every failover time / 3, until aborted.
async fn renew_loop(table: LeaseTable, cfg: Arc<WorkerConfig>, held: HeldMap) {
    let mut tick = tokio::time::interval((cfg.failover_time / 3).max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        renew_leases(&table, &cfg, &held).await;
    }
}

/// Renews every held lease; a lease another worker now holds is stopped.
async fn renew_leases(table: &LeaseTable, cfg: &WorkerConfig, held: &HeldMap) {
    let me = cfg.worker_id.as_str();
    let leases: Vec<Lease> = held
        .lock()
        .values()
        .filter(|h| !h.stopping)
        .map(|h| h.lease.clone())
        .collect();
    for lease in leases {
        let key = lease.key.clone();
        let sent = Instant::now();
        match table.renew(&lease, me).await {
            Ok(Conditional::Done(renewed)) => {
                if let Some(h) = held.lock().get_mut(&key) {
                    h.lease = renewed;
                    // Stop processing well before another worker may
                    // consider the lease expired.
                    *h.valid_until.lock() = sent + cfg.failover_time * 4 / 5;
                }
            }
            Ok(Conditional::Lost) => {
                let now = table.get(&key).await.ok().flatten();
                let reason = match now {
                    Some(l) if l.checkpoint_owner.as_deref() == Some(me) => Stop::Handoff,
                    Some(l) if l.owner.as_deref() == Some(me) => {
                        // Our own write (a checkpoint) raced; keep the lease.
                        if let Some(h) = held.lock().get_mut(&key) {
                            h.lease = l;
                        }
                        continue;
                    }
                    _ => Stop::LeaseLost,
                };
                info!(shard = %key, ?reason, "lease moved to another worker");
                if let Some(h) = held.lock().get_mut(&key) {
                    h.stopping = true;
                    let _ = h.stop.send(Some(reason));
                }
            }
            Err(e) => warn!(shard = %key, error = %e, "lease renewal failed"),
        }
    }
}
