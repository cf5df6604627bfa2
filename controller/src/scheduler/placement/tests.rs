use dora_crds::Kind;
use dora_crds::spec::{Affinity, Driver, NodeSpec, ProductName, WorkloadClass};
use dora_crds::status::{CpuInfo, GpuDevice, NodeReport};
use dora_store::ObjectKey;
use foldhash::HashMapExt;

use super::*;

fn node(name: &str, gpus: &[&str], cpus: u32) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        spec: NodeSpec::default(),
        report: NodeReport {
            heartbeat: 0,
            cpu: CpuInfo {
                count: cpus,
                product_name: "EPYC".into(),
            },
            memory_bytes: 64 << 30,
            gpus: gpus
                .iter()
                .enumerate()
                .map(|(minor, model)| GpuDevice {
                    minor: minor as u32,
                    product_name: (*model).into(),
                    ..GpuDevice::default()
                })
                .collect(),
            drivers: Vec::new(),
            version: String::new(),
            endpoint: None,
        },
        ready: true,
    }
}

fn cpu_demand(millicpu: u64) -> Demand {
    Demand {
        class: WorkloadClass::Cpu,
        gpu: None,
        cpu: Some((ProductName::default(), millicpu)),
        memory: 0,
        node: None,
        affinity: Affinity::First,
        driver: Driver::default(),
    }
}

fn gpu_demand(model: &str, count: u32) -> Demand {
    Demand {
        class: WorkloadClass::Gpu,
        gpu: Some((ProductName::One(model.into()), count)),
        cpu: None,
        ..cpu_demand(0)
    }
}

fn ledger(nodes: Vec<NodeInfo>) -> Ledger {
    let mut ledger = Ledger::default();
    for node in nodes {
        ledger.set_node(node);
    }
    ledger
}

/// Books `booking` on the ledger as container `name`.
fn book(ledger: &mut Ledger, name: &str, booking: Booking) {
    let key = ObjectKey::new(Kind::Container, "z", "w", name);
    ledger.set_in_flight(&key, "uid", 1, Some(booking));
}

fn choose(stack: &Stack, ledger: &Ledger, demand: &Demand) -> Result<Booking, String> {
    stack
        .choose(ledger, demand, &HashMap::new(), &mut Resume::default())
        .map_err(|misfits| explain(ledger.node_count(), &misfits))
}

#[test]
fn each_filter_refuses_with_its_reason() {
    type Change = Box<dyn Fn(&mut NodeInfo)>;
    let cases: Vec<(Change, Demand, &str)> = vec![
        (Box::new(|n| n.ready = false), cpu_demand(1000), "not ready"),
        (
            Box::new(|n| n.spec.scheduling_disabled = true),
            cpu_demand(1000),
            "cordoned",
        ),
        (
            Box::new(|n| n.spec.allow = vec![WorkloadClass::Gpu]),
            cpu_demand(1000),
            "not allowing this workload class",
        ),
        (
            Box::new(|_| {}),
            Demand {
                node: Some("elsewhere".into()),
                ..cpu_demand(1000)
            },
            "not the pinned node",
        ),
        (
            Box::new(|n| n.report.drivers = vec!["process".into()]),
            Demand {
                driver: Driver::Docker,
                ..cpu_demand(1000)
            },
            "without the workload's driver",
        ),
        (
            Box::new(|_| {}),
            gpu_demand("H100", 1),
            "without a GPU of the requested model",
        ),
        (
            Box::new(|_| {}),
            gpu_demand("A100", 3),
            "without enough free GPUs",
        ),
        (
            Box::new(|_| {}),
            Demand {
                cpu: Some((ProductName::One("Xeon".into()), 1000)),
                ..cpu_demand(0)
            },
            "without the requested CPU model",
        ),
        (
            Box::new(|_| {}),
            cpu_demand(5000),
            "without enough free CPU",
        ),
        (
            Box::new(|_| {}),
            cpu_demand(4500),
            "without enough free CPU",
        ),
        (
            Box::new(|_| {}),
            Demand {
                memory: 65 << 30,
                ..cpu_demand(0)
            },
            "without enough free memory",
        ),
    ];
    for (change, demand, reason) in cases {
        let mut refused = node("n0", &["A100", "A100"], 4);
        change(&mut refused);
        let ledger = ledger(vec![refused]);
        let why = choose(&Stack::for_affinity(Affinity::First), &ledger, &demand);
        assert_eq!(why, Err(format!("0/1 nodes fit: 1 {reason}")));
    }
}

#[test]
fn reasons_are_counted_in_stack_order() {
    let mut lost = node("a", &[], 4);
    lost.ready = false;
    let mut cordoned = node("b", &[], 4);
    cordoned.spec.scheduling_disabled = true;
    let full = node("c", &[], 1);
    let small = node("d", &[], 1);
    let ledger = ledger(vec![small, full, cordoned, lost]);
    for affinity in [Affinity::First, Affinity::Fill] {
        let why = choose(&Stack::for_affinity(affinity), &ledger, &cpu_demand(2000));
        assert_eq!(
            why,
            Err("0/4 nodes fit: 1 not ready, 1 cordoned, 2 without enough free CPU".into())
        );
    }
}

#[test]
fn allocation_takes_free_gpus_of_one_model_and_free_cores() {
    let mut ledger = ledger(vec![node("n0", &["A100", "H100", "H100", "A100"], 8)]);
    book(
        &mut ledger,
        "taken",
        Booking {
            node: "n0".into(),
            gpus: vec![1],
            cpus: vec![0, 2],
            millicpu: 2000,
            ..Booking::default()
        },
    );
    let stack = Stack::for_affinity(Affinity::First);
    let any = Demand {
        gpu: Some((ProductName::default(), 2)),
        cpu: Some((ProductName::default(), 2000)),
        ..gpu_demand("", 0)
    };
    let booking = choose(&stack, &ledger, &any).unwrap();
    assert_eq!(booking.gpus, vec![0, 3]);
    assert_eq!(booking.gpu_product.as_deref(), Some("A100"));
    assert_eq!(booking.cpus, vec![1, 3]);
    assert_eq!(booking.cpu_product.as_deref(), Some("EPYC"));
    // One H100 is free of two: a second model with enough free GPUs is not looked for.
    let h100 = choose(&stack, &ledger, &gpu_demand("H100", 2));
    assert_eq!(
        h100,
        Err("0/1 nodes fit: 1 without enough free GPUs".into())
    );
}

/// Two nodes: `a` empty, `b` with two cores taken.
fn half_full() -> Ledger {
    let mut ledger = ledger(vec![node("a", &[], 8), node("b", &[], 8)]);
    book(
        &mut ledger,
        "taken",
        Booking {
            node: "b".into(),
            cpus: vec![0, 1],
            millicpu: 2000,
            ..Booking::default()
        },
    );
    ledger
}

#[test]
fn weighted_scorers_add_up() {
    let ledger = half_full();
    let demand = cpu_demand(1000);
    let pick = |scorers: Vec<(f64, &'static dyn Scorer)>| {
        choose(&Stack::new(scorers), &ledger, &demand).unwrap().node
    };
    assert_eq!(pick(vec![(1.0, &scorers::First)]), "a");
    assert_eq!(pick(vec![(1.0, &scorers::Fill)]), "b");
    // First gives a 1 and b 0.5; Fill gives a 0 and b 2 (cores in use).
    assert_eq!(
        pick(vec![(1.0, &scorers::Fill), (1.0, &scorers::First)]),
        "b"
    );
    assert_eq!(
        pick(vec![(1.0, &scorers::Fill), (5.0, &scorers::First)]),
        "a"
    );
    assert_eq!(pick(vec![(-1.0, &scorers::Fill)]), "a");
}

/// The node with the most memory free.
struct MostMemory;

impl Scorer for MostMemory {
    fn score(&self, candidate: &Candidate<'_>) -> f64 {
        (candidate.node.report.memory_bytes - candidate.usage.memory) as f64
    }
}

#[test]
fn a_new_scorer_plugs_in() {
    let mut ledger = half_full();
    book(
        &mut ledger,
        "big",
        Booking {
            node: "a".into(),
            memory: 32 << 30,
            ..Booking::default()
        },
    );
    let stack = Stack::new(vec![(1.0, &MostMemory)]);
    assert_eq!(
        choose(&stack, &ledger, &cpu_demand(1000)).unwrap().node,
        "b"
    );
    let first = Stack::for_affinity(Affinity::First);
    assert_eq!(
        choose(&first, &ledger, &cpu_demand(1000)).unwrap().node,
        "a"
    );
}

#[test]
fn distribute_prefers_fewer_of_the_workload_then_fewer_containers() {
    let ledger = half_full();
    let stack = Stack::for_affinity(Affinity::Distribute);
    let demand = cpu_demand(1000);
    let mut spread = HashMap::new();
    let pick = |spread: &HashMap<String, u32>| {
        stack
            .choose(&ledger, &demand, spread, &mut Resume::default())
            .unwrap()
            .node
    };
    assert_eq!(pick(&spread), "a");
    spread.insert("a".to_string(), 1);
    assert_eq!(pick(&spread), "b");
}

#[test]
fn a_search_in_name_order_resumes_where_it_stopped() {
    let ledger = ledger(vec![node("a", &[], 1), node("b", &[], 4)]);
    let stack = Stack::for_affinity(Affinity::First);
    let mut resume = Resume::default();
    let demand = cpu_demand(2000);
    let booking = stack.choose(&ledger, &demand, &HashMap::new(), &mut resume);
    assert_eq!(booking.unwrap().node, "b");
    assert!(matches!(&resume, Resume::At(name) if name == "b"));
    // Nodes before the cursor are not looked at again: none of their reasons is counted.
    let mut past = Resume::PastLastNode;
    let misfits = stack
        .choose(&ledger, &demand, &HashMap::new(), &mut past)
        .unwrap_err();
    assert!(misfits.is_empty());
}
