//! The columns `dora get` shows for each kind, declared once: a header and where in the object
//! (as the API returns it) the value is read, like Kubernetes' `additionalPrinterColumns`.
//! NAME, WORKSPACE and AGE are common to every kind and not declared here.

use serde_json::Value;

use crate::Kind;

/// How a column's value becomes text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The value itself; lists are joined with commas.
    Text,
    /// The number of items of a list.
    Count,
    /// A number that is 0 until written (restarts).
    Counter,
    /// A command: a list's words joined with spaces.
    Command,
    /// The keys of a map, joined with commas.
    Keys,
    /// A byte count, in binary units (`16Gi`).
    Bytes,
    /// A number with two decimals.
    Decimal,
    /// Unix milliseconds or an RFC 3339 time, shown as the time since then (`5m`).
    Age,
    /// Unix milliseconds or an RFC 3339 time, shown as the time until then (`in 35s`).
    Until,
    /// `value/other`, the other read at the given pointer (`READY 2/3`).
    Of(&'static str),
}

/// One column of a kind's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    /// JSON pointers into the object; the first that holds a value is shown. A `*` segment
    /// reads that field of every item of a list.
    pub pointers: &'static [&'static str],
    pub format: Format,
    /// Shown only with `-o wide`.
    pub wide: bool,
    /// May be empty on a complete object of the kind (a GPU's temperature where its node cannot
    /// read it, the node of a container still waiting); other columns must hold data.
    pub optional: bool,
}

const fn column(name: &'static str, pointers: &'static [&'static str]) -> Column {
    Column {
        name,
        pointers,
        format: Format::Text,
        wide: false,
        optional: false,
    }
}

impl Column {
    const fn format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    const fn wide(mut self) -> Self {
        self.wide = true;
        self
    }

    const fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    /// The value the column shows for `object`, before formatting; `None` when no pointer
    /// reaches a value.
    pub fn value(&self, object: &Value) -> Option<Value> {
        self.pointers
            .iter()
            .find_map(|pointer| read(object, pointer).filter(|v| !v.is_null()))
    }
}

/// Reads a JSON pointer whose `*` segments map over lists.
fn read(object: &Value, pointer: &str) -> Option<Value> {
    match pointer.split_once("/*") {
        None => object.pointer(pointer).cloned(),
        Some((list, rest)) => {
            let items = object.pointer(list)?.as_array()?;
            let values: Vec<Value> = items.iter().filter_map(|i| read(i, rest)).collect();
            Some(Value::Array(values))
        }
    }
}

const WORKLOAD: &[Column] = &[
    column("READY", &["/status/computed/ready"])
        .format(Format::Of("/spec/replica/count"))
        .optional(),
    column("STATUS", &["/status/phase"]),
    column("DRIVER", &["/spec/driver"]),
    column("IMAGE", &["/spec/image/image", "/spec/config/cmd"])
        .format(Format::Command)
        .optional(),
    column("GEN", &["/metadata/generation"]).wide(),
    column("OBSERVED", &["/status/observedGeneration"])
        .wide()
        .optional(),
    column("MESSAGE", &["/status/message"]).wide().optional(),
];

const CONTAINER: &[Column] = &[
    column("WORKLOAD", &["/spec/workload"]),
    column("NODE", &["/status/computed/node"]).optional(),
    column("STATUS", &["/status/phase"]),
    column("RESTARTS", &["/status/computed/restarts"])
        .format(Format::Counter)
        .optional(),
    column("GPUS", &["/status/computed/gpus"]).optional(),
    column("EXIT", &["/status/observed/exitCode"])
        .wide()
        .optional(),
    column("STARTED", &["/status/observed/startedAt"])
        .format(Format::Age)
        .wide()
        .optional(),
    column("RETRY", &["/status/nextRetry"])
        .format(Format::Until)
        .wide()
        .optional(),
    column("MESSAGE", &["/status/message"]).wide().optional(),
];

const NODE: &[Column] = &[
    column("STATUS", &["/status/phase"]),
    column("SCHEDULING", &["/status/scheduling"]),
    column("GPUS", &["/status/observed/gpus"]).format(Format::Count),
    column("CPUS", &["/status/observed/cpu/count"]),
    column("MEMORY", &["/status/observed/memoryBytes"]).format(Format::Bytes),
    column("GPU MODEL", &["/status/observed/gpus/*/productName"])
        .wide()
        .optional(),
    column("CPU MODEL", &["/status/observed/cpu/productName"])
        .wide()
        .optional(),
    column("AGENT", &["/status/observed/version"]).wide(),
    column("ENDPOINT", &["/status/observed/endpoint", "/spec/endpoint"])
        .wide()
        .optional(),
];

const GPU: &[Column] = &[
    column("NODE", &["/status/node"]),
    column("MINOR", &["/status/minor"]),
    column("MODEL", &["/status/productName"]),
    column("MEMORY", &["/status/memoryBytes"]).format(Format::Bytes),
    column("USED", &["/status/memoryUsedBytes"])
        .format(Format::Bytes)
        .optional(),
    column("TEMP", &["/status/temperature"]).optional(),
    column("POWER", &["/status/powerWatts"]).optional(),
    column("BOOKED", &["/status/booked"]),
    column("ALLOWED", &["/status/allowed"]),
    column("CONTAINER", &["/status/container"])
        .wide()
        .optional(),
];

const CPU: &[Column] = &[
    column("NODE", &["/status/node"]),
    column("MODEL", &["/status/productName"]),
    column("CORES", &["/status/count"]),
    column("BOOKED", &["/status/bookedMillicores"]),
    column("ALLOWED", &["/status/allowed"]),
];

const USER: &[Column] = &[
    column("DEFAULT ZONE", &["/spec/default/zone"]).optional(),
    column("DEFAULT WORKSPACE", &["/spec/default/workspace"]).optional(),
    column("ROLES", &["/spec/resources/*/role"]),
];

const ROLE: &[Column] = &[column("KINDS", &["/spec/permission"]).format(Format::Keys)];

const ZONE: &[Column] = &[column("ENDPOINT", &["/spec/endpoint"]).optional()];

const STORAGE: &[Column] = &[
    column("KIND", &["/spec/kind"]),
    column("MOUNTPATH", &["/spec/mountpath"]),
    column("ENDPOINT", &["/spec/endpoint"]).wide().optional(),
];

const VOLUME: &[Column] = &[
    column("STORAGE", &["/spec/storage"]),
    column("POLICY", &["/spec/policy"]),
];

const RESOURCECREDIT: &[Column] = &[
    column("PRODUCT", &["/spec/product_name"]),
    column("CREDIT/HOUR", &["/spec/credit/per/hour"]),
];

const USERCREDIT: &[Column] = &[
    column("USER", &["/spec/user"]),
    column("WEEKLY", &["/status/computed/weekly"]).format(Format::Decimal),
    column("LIMIT", &["/status/computed/limit"])
        .format(Format::Decimal)
        .optional(),
    column("TOTAL", &["/status/computed/total"]).format(Format::Decimal),
    column("OUT", &["/status/computed/outOfCredit"]),
    column("RESET", &["/status/computed/reset"])
        .format(Format::Until)
        .wide(),
];

const TOKEN: &[Column] = &[
    column("USER", &["/spec/user"]),
    column("PURPOSE", &["/spec/purpose"]),
    column("EXPIRES", &["/spec/expires"]).format(Format::Until),
    column("LAST USED", &["/status/computed/lastUsed"])
        .format(Format::Age)
        .optional(),
    column("REVOKED", &["/spec/revoked"])
        .format(Format::Age)
        .optional(),
    column("ZONE", &["/spec/zone"]).wide().optional(),
    column("NODE", &["/spec/node"]).wide().optional(),
];

const DEFINITION: &[Column] = &[
    column("KIND", &["/spec/names/kind"]),
    column("SCOPE", &["/spec/scope"]),
    column("ALIASES", &["/spec/names/aliases"]).optional(),
    column("STATUS", &["/status/phase"]),
    column("MESSAGE", &["/status/message"]).wide().optional(),
];

impl Kind {
    /// The kind's own table columns, in order; a defined kind's are those its definition
    /// declares.
    pub fn columns(self) -> &'static [Column] {
        match self {
            Kind::Zone => ZONE,
            Kind::Workspace => &[],
            Kind::Role => ROLE,
            Kind::User => USER,
            Kind::Storage => STORAGE,
            Kind::Volume => VOLUME,
            Kind::Node => NODE,
            Kind::Resourcecredit => RESOURCECREDIT,
            Kind::Usercredit => USERCREDIT,
            Kind::Workload => WORKLOAD,
            Kind::Container => CONTAINER,
            Kind::Gpu => GPU,
            Kind::Cpu => CPU,
            Kind::Token => TOKEN,
            Kind::Definition => DEFINITION,
            Kind::Defined(name) => crate::registry::columns(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn columns_read_the_first_pointer_with_a_value() {
        let image = WORKLOAD[3];
        let process = json!({"spec": {"config": {"cmd": ["sleep", "9"]}}});
        assert_eq!(image.value(&process), Some(json!(["sleep", "9"])));
        let docker = json!({"spec": {"image": {"image": "busybox"}, "config": {"cmd": "x"}}});
        assert_eq!(image.value(&docker), Some(json!("busybox")));
        assert_eq!(image.value(&json!({})), None);
    }

    #[test]
    fn a_star_reads_a_field_of_every_item() {
        let roles = USER[2];
        let user = json!({"spec": {"resources": [{"role": "admin"}, {"role": "viewer"}]}});
        assert_eq!(roles.value(&user), Some(json!(["admin", "viewer"])));
    }

    #[test]
    fn headers_are_unique_per_kind() {
        for kind in Kind::ALL {
            let mut seen = std::collections::HashSet::new();
            for column in kind.columns() {
                assert!(seen.insert(column.name), "{kind} has two {}", column.name);
                assert!(
                    ![
                        "EVENT",
                        "NAME",
                        "WORKSPACE",
                        "AGE",
                        "VERSION",
                        "OWNER",
                        "LABELS"
                    ]
                    .contains(&column.name),
                    "{kind}'s {} is a common column",
                    column.name
                );
            }
        }
    }
}
