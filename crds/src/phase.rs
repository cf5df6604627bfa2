//! The one word a person reads first about a workload, container or node (`Running`,
//! `Pending`, `CrashLoopBackOff`, ...) and the sentence that explains it, derived from the
//! status columns the scheduler and the nodes write. The API server adds both to every object
//! it returns as `status.phase` and `status.message`, so that tables, `dora wait` and clients
//! read the same words.

use crate::status::{
    Condition, ContainerReport, ContainerState, NodeCondition, Placement, WorkloadStatus,
};

/// A status word and, when there is more to say, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    pub word: &'static str,
    pub message: Option<String>,
    /// When the container (or the workload's first waiting container) is restarted next,
    /// Unix milliseconds.
    pub next_retry: Option<i64>,
}

impl Phase {
    fn new(word: &'static str) -> Self {
        Phase {
            word,
            message: None,
            next_retry: None,
        }
    }

    fn because(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }
}

/// A workload's phase from the scheduler's status (`None` before the scheduler has seen it)
/// and the replica count its spec asks for.
pub fn workload(status: Option<&WorkloadStatus>, replicas: u32) -> Phase {
    let Some(status) = status else {
        return Phase::new("Pending").because("waiting for the zone's scheduler");
    };
    if let Some(why) = &status.paused {
        let word = if status.out_of_credit {
            "OutOfCredit"
        } else {
            "Paused"
        };
        return Phase::new(word).because(why.clone());
    }
    if replicas == 0 {
        return Phase::new("Stopped").because("the replica count is 0");
    }
    if status.backoff > 0 {
        let mut phase = Phase::new("CrashLoopBackOff").because(format!(
            "{} of {replicas} restarting after they ended",
            status.backoff
        ));
        phase.next_retry = status.next_restart;
        return phase;
    }
    if status.finished >= replicas {
        return if status.failed > 0 {
            Phase::new("Failed").because(format!("{} of {replicas} failed", status.failed))
        } else {
            Phase::new("Completed")
        };
    }
    if status.pending > 0 {
        let phase = Phase::new("Pending");
        return match &status.reason {
            Some(why) => phase.because(why.clone()),
            None => phase.because(format!("{} waiting for a node", status.pending)),
        };
    }
    if status.ready + status.finished >= replicas {
        return Phase::new("Running");
    }
    Phase::new("Starting").because(format!("{} of {replicas} running", status.ready))
}

/// The conditions the scheduler keeps on a workload, their transition times not yet set:
/// `Reconciled` (it has seen the current spec), `Scheduled` (no container waits for a node)
/// and `Ready` (the phase is one of the settled ones: `Running`, `Completed`, `Stopped`).
pub fn workload_conditions(status: &WorkloadStatus) -> Vec<Condition> {
    let scheduled = match (&status.paused, status.pending) {
        (Some(why), _) => {
            let reason = if status.out_of_credit {
                "OutOfCredit"
            } else {
                "Paused"
            };
            Condition::new("Scheduled", false, reason, why.as_str())
        }
        (None, 0) => Condition::new("Scheduled", true, "Placed", ""),
        (None, pending) => match &status.reason {
            Some(why) => Condition::new("Scheduled", false, "Unschedulable", why.as_str()),
            None => Condition::new(
                "Scheduled",
                false,
                "Waiting",
                format!("{pending} waiting for a node"),
            ),
        },
    };
    let phase = workload(Some(status), status.desired);
    let settled = matches!(phase.word, "Running" | "Completed" | "Stopped");
    let ready = Condition::new(
        "Ready",
        settled,
        phase.word,
        phase.message.unwrap_or_default(),
    );
    vec![
        Condition::new("Reconciled", true, "Succeeded", ""),
        scheduled,
        ready,
    ]
}

/// A container's phase from its placement (the scheduler's `computed` column) and the last
/// report of its node (`observed`, possibly of an earlier run).
pub fn container(place: Option<&Placement>, report: Option<&ContainerReport>) -> Phase {
    // The scheduler makes containers: one without a placement waits for a node.
    let Some(place) = place else {
        return Phase::new("Pending").because("waiting for a node");
    };
    let Some(node) = &place.node else {
        if let Some(retry) = place.not_before {
            let ended = report.filter(|r| r.state.is_final());
            let word = if ended.is_some_and(|r| r.state == ContainerState::Succeeded) {
                "BackOff"
            } else {
                "CrashLoopBackOff"
            };
            let mut phase = Phase::new(word).because(match ended {
                Some(r) => format!("restart {} after {}", place.restarts, ending(r)),
                None => format!("restart {}", place.restarts),
            });
            phase.next_retry = Some(retry);
            return phase;
        }
        return Phase::new("Pending").because("waiting for a node");
    };
    let current = report.filter(|r| r.is_of(place));
    let state = current.map_or(ContainerState::Pending, |r| r.state);
    if place.stop.is_some() && !state.is_final() {
        let why = place.stop.clone().unwrap_or_default();
        return Phase::new("Terminating").because(why);
    }
    match (state, current) {
        (ContainerState::Running, _) => Phase::new("Running"),
        (ContainerState::Pulling, _) => Phase::new("Pulling").because(format!("on {node}")),
        (ContainerState::Succeeded, Some(r)) => Phase::new("Completed").because(ending(r)),
        (ContainerState::Failed, Some(r)) => Phase::new("Failed").because(ending(r)),
        _ => Phase::new("Starting").because(format!("bound to {node}")),
    }
}

/// How a run ended: its exit code and the node's reason.
fn ending(report: &ContainerReport) -> String {
    let code = report
        .exit_code
        .map_or("no exit code".to_string(), |c| format!("exit code {c}"));
    match &report.reason {
        Some(reason) => format!("{code} ({reason})"),
        None => code,
    }
}

/// A node's readiness from the scheduler's condition (`None`: never judged yet).
pub fn node(condition: Option<&NodeCondition>) -> Phase {
    match condition {
        Some(c) if c.ready => Phase::new("Ready"),
        Some(c) => {
            let phase = Phase::new("NotReady");
            match &c.reason {
                Some(why) => phase.because(why.clone()),
                None => phase,
            }
        }
        None => Phase::new("Unknown").because("no heartbeat seen yet"),
    }
}

/// Whether new containers may go to a node: `Enabled`, `Cordoned` (`spec.schedulingDisabled`)
/// or `Drained` (`dora drain node`, which also moves what runs there).
pub fn node_scheduling(cordoned: bool, condition: Option<&NodeCondition>) -> &'static str {
    if condition.is_some_and(|c| c.drained) {
        "Drained"
    } else if cordoned {
        "Cordoned"
    } else {
        "Enabled"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> WorkloadStatus {
        WorkloadStatus {
            desired: 2,
            ..WorkloadStatus::default()
        }
    }

    #[test]
    fn workload_conditions_say_what_waits() {
        let of = |conditions: &[Condition], kind: &str| {
            let c = conditions.iter().find(|c| c.kind == kind).unwrap().clone();
            (c.status, c.reason, c.message)
        };
        let waiting = WorkloadStatus {
            pending: 2,
            reason: Some("no node has 8 free GPUs".into()),
            ..status()
        };
        let conditions = workload_conditions(&waiting);
        assert_eq!(of(&conditions, "Reconciled").0, "True");
        assert_eq!(
            of(&conditions, "Scheduled"),
            (
                "False".into(),
                "Unschedulable".into(),
                "no node has 8 free GPUs".into()
            )
        );
        assert_eq!(of(&conditions, "Ready").0, "False");
        assert_eq!(of(&conditions, "Ready").1, "Pending");
        let running = WorkloadStatus {
            ready: 2,
            ..status()
        };
        let conditions = workload_conditions(&running);
        assert_eq!(of(&conditions, "Scheduled").1, "Placed");
        assert_eq!(
            of(&conditions, "Ready"),
            ("True".into(), "Running".into(), String::new())
        );
        let broke = WorkloadStatus {
            paused: Some("alice has used 100 of 100 credits".into()),
            out_of_credit: true,
            ..status()
        };
        assert_eq!(
            of(&workload_conditions(&broke), "Scheduled").1,
            "OutOfCredit"
        );
    }

    #[test]
    fn workloads_say_what_they_do() {
        assert_eq!(workload(None, 1).word, "Pending");
        let running = WorkloadStatus {
            ready: 2,
            ..status()
        };
        assert_eq!(workload(Some(&running), 2).word, "Running");
        let done = WorkloadStatus {
            finished: 2,
            ..status()
        };
        assert_eq!(workload(Some(&done), 2).word, "Completed");
        let failed = WorkloadStatus {
            failed: 1,
            ..done.clone()
        };
        let phase = workload(Some(&failed), 2);
        assert_eq!(
            (phase.word, phase.message.as_deref()),
            ("Failed", Some("1 of 2 failed"))
        );
        let waiting = WorkloadStatus {
            pending: 2,
            reason: Some("0/3 nodes fit".into()),
            ..status()
        };
        let phase = workload(Some(&waiting), 2);
        assert_eq!(
            (phase.word, phase.message.as_deref()),
            ("Pending", Some("0/3 nodes fit"))
        );
        let crashing = WorkloadStatus {
            backoff: 1,
            next_restart: Some(5),
            ..status()
        };
        let phase = workload(Some(&crashing), 2);
        assert_eq!(
            (phase.word, phase.next_retry),
            ("CrashLoopBackOff", Some(5))
        );
        let paused = WorkloadStatus {
            paused: Some("paused by alice".into()),
            ..status()
        };
        assert_eq!(workload(Some(&paused), 2).word, "Paused");
        let broke = WorkloadStatus {
            out_of_credit: true,
            ..paused
        };
        assert_eq!(workload(Some(&broke), 2).word, "OutOfCredit");
        assert_eq!(workload(Some(&status()), 0).word, "Stopped");
        assert_eq!(workload(Some(&status()), 2).word, "Starting");
    }

    fn bound() -> Placement {
        Placement {
            node: Some("n1".into()),
            epoch: 2,
            ..Placement::default()
        }
    }

    fn reported(state: ContainerState) -> ContainerReport {
        ContainerReport {
            node: "n1".into(),
            epoch: 2,
            state,
            ..ContainerReport::default()
        }
    }

    #[test]
    fn containers_say_what_they_do() {
        assert_eq!(container(None, None).word, "Pending");
        assert_eq!(container(Some(&Placement::default()), None).word, "Pending");
        assert_eq!(container(Some(&bound()), None).word, "Starting");
        let running = reported(ContainerState::Running);
        assert_eq!(container(Some(&bound()), Some(&running)).word, "Running");
        let old_run = ContainerReport {
            epoch: 1,
            ..running.clone()
        };
        assert_eq!(container(Some(&bound()), Some(&old_run)).word, "Starting");
        let failed = ContainerReport {
            exit_code: Some(3),
            ..reported(ContainerState::Failed)
        };
        let phase = container(Some(&bound()), Some(&failed));
        assert_eq!(
            (phase.word, phase.message.as_deref()),
            ("Failed", Some("exit code 3"))
        );
        let succeeded = ContainerReport {
            exit_code: Some(0),
            ..reported(ContainerState::Succeeded)
        };
        assert_eq!(
            container(Some(&bound()), Some(&succeeded)).word,
            "Completed"
        );
        let stopping = Placement {
            stop: Some("MaxRunTime".into()),
            ..bound()
        };
        assert_eq!(
            container(Some(&stopping), Some(&running)).word,
            "Terminating"
        );
        let backoff = Placement {
            epoch: 2,
            restarts: 1,
            not_before: Some(99),
            ..Placement::default()
        };
        let phase = container(Some(&backoff), Some(&failed));
        assert_eq!(
            (phase.word, phase.message.as_deref(), phase.next_retry),
            (
                "CrashLoopBackOff",
                Some("restart 1 after exit code 3"),
                Some(99)
            )
        );
        assert_eq!(container(Some(&backoff), Some(&succeeded)).word, "BackOff");
    }

    #[test]
    fn nodes_say_whether_they_take_work() {
        let ready = NodeCondition {
            ready: true,
            ..NodeCondition::default()
        };
        assert_eq!(node(Some(&ready)).word, "Ready");
        assert_eq!(node(None).word, "Unknown");
        assert_eq!(node_scheduling(false, Some(&ready)), "Enabled");
        assert_eq!(node_scheduling(true, Some(&ready)), "Cordoned");
        let drained = NodeCondition {
            drained: true,
            ..ready
        };
        assert_eq!(node_scheduling(false, Some(&drained)), "Drained");
    }
}
