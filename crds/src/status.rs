//! The status column groups of the built-in kinds: what node agents report (`observed`) and
//! what the scheduler and credit system compute (`computed`). Times are Unix milliseconds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A GPU as its node reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuDevice {
    pub minor: u32,
    pub product_name: String,
    #[serde(default)]
    pub memory_bytes: u64,
    /// Memory in use, when the node can tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used_bytes: Option<u64>,
    /// Degrees Celsius.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<u32>,
    /// Watts drawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_watts: Option<f64>,
    /// Percent of the time a kernel ran over the last sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization: Option<u32>,
}

/// The CPUs of a node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuInfo {
    pub count: u32,
    #[serde(default)]
    pub product_name: String,
}

/// A node's `observed` columns: its hardware and its last heartbeat, reported by its agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    pub heartbeat: i64,
    pub cpu: CpuInfo,
    pub memory_bytes: u64,
    #[serde(default)]
    pub gpus: Vec<GpuDevice>,
    #[serde(default)]
    pub drivers: Vec<String>,
    #[serde(default)]
    pub version: String,
    /// The agent's HTTPS URL, through which the API server reaches logs, shells and volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

impl NodeReport {
    /// How long a node may go without a heartbeat and still count as up, unless the scheduler
    /// is configured otherwise.
    pub const GRACE: std::time::Duration = std::time::Duration::from_secs(20);

    /// Whether the node's last heartbeat is at most `grace` old at `now` (Unix milliseconds).
    pub fn is_fresh(&self, now: i64, grace: std::time::Duration) -> bool {
        now - self.heartbeat <= grace.as_millis() as i64
    }
}

/// A node's `computed` columns, kept by the scheduler.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCondition {
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When `ready` last changed.
    pub since: i64,
    /// Drained (`dora drain node`): nothing new is placed here and what runs moves away,
    /// until `dora uncordon node`.
    #[serde(default)]
    pub drained: bool,
}

/// Where and with what a container runs: its `computed` columns, written by the scheduler.
/// No `node` means it waits to be placed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Bumped at every binding; a node holding an older epoch must stop the container.
    pub epoch: u64,
    /// Restarts so far.
    #[serde(default)]
    pub restarts: u32,
    /// GPU minor numbers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_product: Option<String>,
    /// Whole cores pinned to the container (a CPU set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpus: Vec<u32>,
    /// CPU in millicores (whole cores included).
    #[serde(default)]
    pub millicpu: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_product: Option<String>,
    #[serde(default)]
    pub memory_bytes: u64,
    /// When it was bound.
    #[serde(default)]
    pub bound_at: i64,
    /// Not to be placed before this instant (restart backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<i64>,
    /// Asks the node to stop the container, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<String>,
}

/// A container's life as its node sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    #[default]
    Pending,
    Pulling,
    Running,
    Succeeded,
    Failed,
}

impl ContainerState {
    /// Whether the container has ended.
    pub fn is_final(self) -> bool {
        matches!(self, ContainerState::Succeeded | ContainerState::Failed)
    }

    /// The name as shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Pending => "Pending",
            ContainerState::Pulling => "Pulling",
            ContainerState::Running => "Running",
            ContainerState::Succeeded => "Succeeded",
            ContainerState::Failed => "Failed",
        }
    }
}

/// A container's `observed` columns, reported by its node for one binding (`epoch`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerReport {
    pub node: String,
    pub epoch: u64,
    pub state: ContainerState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The placement's restart count this report belongs to.
    #[serde(default)]
    pub restarts: u32,
}

impl ContainerReport {
    /// Whether this report is about `place`'s binding (same node and epoch), not an earlier one:
    /// the rule by which the API server refuses a stale copy's report, and by which the
    /// scheduler and node agents read the report of the current binding only.
    pub fn is_of(&self, place: &Placement) -> bool {
        self.epoch == place.epoch && place.node.as_ref() == Some(&self.node)
    }
}

impl Placement {
    /// Whether the container holds its node's resources: bound, and not reported ended.
    pub fn holds(&self, report: Option<&ContainerReport>) -> bool {
        self.node.is_some() && !report.is_some_and(|r| r.is_of(self) && r.state.is_final())
    }
}

/// A workload's `computed` columns, kept by the scheduler.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    pub desired: u32,
    /// Running containers.
    pub ready: u32,
    /// Containers made from the current spec.
    pub updated: u32,
    /// Containers waiting for a node.
    pub pending: u32,
    /// Containers that ended and are not restarted.
    pub finished: u32,
    /// Of the finished ones, those that failed.
    #[serde(default)]
    pub failed: u32,
    /// Containers waiting out their restart backoff.
    #[serde(default)]
    pub backoff: u32,
    /// The soonest restart of those, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_restart: Option<i64>,
    /// Paused because its owner ran out of credits (`paused` says until when).
    #[serde(default)]
    pub out_of_credit: bool,
    /// Why containers wait, when they do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the waiting containers may start at the earliest (epoch milliseconds), as the
    /// scheduler's backfill estimates it from the `maxRunTime` of what runs where they fit;
    /// none when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_start: Option<i64>,
    /// Why the workload is paused, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
    /// Who paused it with `dora pause`, until `dora resume`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_by: Option<String>,
    /// The generation of the spec this status describes.
    #[serde(default)]
    pub observed_generation: u64,
    /// `Reconciled`, `Scheduled` and `Ready`, as [`Condition`]s; the API shows them as
    /// `status.conditions`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A user's credit account in one zone: the `computed` columns of a Usercredit, kept by the
/// credit system.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreditAccount {
    /// Credits used since `week_start`.
    pub weekly: f64,
    /// Credits used since the account was made.
    pub total: f64,
    /// The weekly limit from `User.spec.credits`; none means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<f64>,
    pub week_start: i64,
    /// The next weekly reset.
    pub reset: i64,
    pub out_of_credit: bool,
    /// The last slice: the sums count every container the credit system saw running then up
    /// to this instant, and every container it saw ended in full. One instant for the row,
    /// whatever the number of containers.
    #[serde(default)]
    pub counted_until: i64,
    /// Credits used since `week_start` per workload (`workspace/name`), like Slurm's `sacct`.
    /// At most [`CreditAccount::MAX_WORKLOADS`] entries: past that, the smallest are added up
    /// under [`CreditAccount::OTHER_WORKLOADS`], so the row stays small.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub workloads: BTreeMap<String, f64>,
}

impl CreditAccount {
    /// The most workloads an account lists one by one.
    pub const MAX_WORKLOADS: usize = 1000;
    /// Where the use of workloads past [`CreditAccount::MAX_WORKLOADS`] is added up.
    pub const OTHER_WORKLOADS: &str = "(others)";

    /// Adds `credits` to the weekly use of `workload`, keeping the list bounded.
    pub fn charge(&mut self, workload: &str, credits: f64) {
        if let Some(used) = self.workloads.get_mut(workload) {
            *used += credits;
            return;
        }
        self.workloads.insert(workload.to_string(), credits);
        while self.workloads.len() > Self::MAX_WORKLOADS {
            let smallest = self
                .workloads
                .iter()
                .filter(|(name, _)| *name != Self::OTHER_WORKLOADS)
                .min_by(|a, b| a.1.total_cmp(b.1))
                .map(|(name, _)| name.clone());
            let Some(name) = smallest else { break };
            let used = self.workloads.remove(&name).unwrap_or_default();
            *self
                .workloads
                .entry(Self::OTHER_WORKLOADS.to_string())
                .or_default() += used;
        }
    }
}

/// One aspect of an object's state, as Kubernetes' conditions: every controller keeps a
/// `Reconciled` condition in the status of the objects it reconciles, and may keep others
/// (a Workload's `Scheduled` and `Ready`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// What the condition is about (`Reconciled`).
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// One word for why (`Succeeded`, `Failed`).
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// RFC 3339 time of the last change of `status`.
    pub last_transition_time: String,
}

impl Condition {
    /// The condition `kind` with `truth` (`True` or `False`) for `reason`, its transition time
    /// left empty until [`Condition::since`].
    pub fn new(kind: &str, truth: bool, reason: &str, message: impl Into<String>) -> Condition {
        Condition {
            kind: kind.into(),
            status: if truth { "True" } else { "False" }.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: String::new(),
        }
    }

    /// Sets the transition time: that of the condition of the same type in `before` when its
    /// status is the same, `now` when it changed or is new.
    pub fn since(mut self, before: &[Condition], now: &str) -> Condition {
        self.last_transition_time = before
            .iter()
            .find(|c| c.kind == self.kind && c.status == self.status)
            .map_or_else(|| now.to_string(), |c| c.last_transition_time.clone());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_of_its_binding_only() {
        let place = Placement {
            node: Some("n1".into()),
            epoch: 2,
            ..Placement::default()
        };
        let report = |node: &str, epoch| ContainerReport {
            node: node.into(),
            epoch,
            ..ContainerReport::default()
        };
        assert!(report("n1", 2).is_of(&place));
        assert!(!report("n1", 1).is_of(&place));
        assert!(!report("n2", 2).is_of(&place));
        assert!(!report("n1", 2).is_of(&Placement::default()));
    }

    #[test]
    fn a_heartbeat_is_fresh_within_the_grace() {
        let report = NodeReport {
            heartbeat: 1_000,
            ..NodeReport::default()
        };
        assert!(report.is_fresh(21_000, NodeReport::GRACE));
        assert!(!report.is_fresh(21_001, NodeReport::GRACE));
    }

    #[test]
    fn a_condition_keeps_its_transition_time_until_its_status_changes() {
        let first = Condition::new("Ready", false, "Pending", "0/1 running").since(&[], "t1");
        assert_eq!(first.last_transition_time, "t1");
        let still = Condition::new("Ready", false, "Pending", "0/2 running")
            .since(std::slice::from_ref(&first), "t2");
        assert_eq!(still.last_transition_time, "t1", "same status, new message");
        let flipped = Condition::new("Ready", true, "Running", "").since(&[still], "t3");
        assert_eq!(flipped.last_transition_time, "t3");
        let other = Condition::new("Scheduled", false, "Pending", "").since(&[first], "t4");
        assert_eq!(
            other.last_transition_time, "t4",
            "another type is another condition"
        );
    }
}
