//! Kinds with Rust types: a [`Resource`] names a kind and the types of its objects' spec and
//! status; its Definition comes from them (the spec's JSON Schema by schemars), and an
//! [`Object`] reads a watched row as those types. Untyped code reads rows as they are.

use std::collections::BTreeMap;

use dora_crds::Scope;
use dora_crds::spec::{DefinitionNames, DefinitionSpec, PrinterColumn};
use dora_store::{ObjectKey, Row};
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::KindRef;

/// A kind whose objects' spec and status are Rust types.
pub trait Resource {
    /// The name written in `kind:` (`Sweep`).
    const KIND: &'static str;
    /// The lowercase plural of paths and `dora get` (`sweeps`).
    const PLURAL: &'static str;
    /// Where its objects live.
    const SCOPE: Scope;
    type Spec: Serialize + DeserializeOwned + JsonSchema;
    /// What its controller writes; `()` for a kind without a status.
    type Status: Serialize + DeserializeOwned + Default;

    /// Short names for the command line.
    fn aliases() -> Vec<String> {
        Vec::new()
    }

    /// The columns `dora get` shows after NAME.
    fn columns() -> Vec<PrinterColumn> {
        Vec::new()
    }

    /// Whether a controller writes its objects' status.
    fn has_status() -> bool {
        std::mem::size_of::<Self::Status>() > 0
    }

    /// The Definition declaring the kind, as a manifest to apply.
    fn definition() -> Value {
        let spec = DefinitionSpec {
            names: DefinitionNames {
                kind: Self::KIND.into(),
                plural: Self::PLURAL.into(),
                aliases: Self::aliases(),
            },
            scope: Self::SCOPE,
            schema: dora_crds::schema_of::<Self::Spec>(),
            columns: Self::columns(),
            status: Self::has_status(),
        };
        json!({"apiVersion": dora_crds::API_VERSION, "kind": "Definition",
               "metadata": {"name": Self::PLURAL}, "spec": spec})
    }
}

/// An object of a typed kind, as a controller reads it.
#[derive(Debug, Clone)]
pub struct Object<R: Resource> {
    pub key: ObjectKey,
    /// The number of spec changes: what `observedGeneration` reports.
    pub generation: u64,
    pub labels: BTreeMap<String, String>,
    pub spec: R::Spec,
    /// Its status as last written, or the default when none was.
    pub status: R::Status,
}

impl<R: Resource> Object<R> {
    /// Reads `row` (of a watch or cache) as the kind's types.
    pub fn from_row(row: &Row) -> Result<Self, serde_json::Error> {
        let status = match &*row.computed {
            Value::Null => R::Status::default(),
            written => serde_json::from_value(written.clone())?,
        };
        Ok(Object {
            key: row.key.clone(),
            generation: row.generation,
            labels: row.labels.clone(),
            spec: serde_json::from_value(Value::clone(&row.resource))?,
            status,
        })
    }

    /// The object's API path, where its status is written (`.../status`).
    pub fn path(&self) -> String {
        KindRef::of::<R>().object_path(&self.key)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use dora_crds::Kind;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Serialize, Deserialize, JsonSchema)]
    struct TrainingSpec {
        epochs: u32,
        #[serde(default)]
        dataset: Option<String>,
    }

    #[derive(Default, Serialize, Deserialize)]
    struct TrainingStatus {
        done: u32,
    }

    struct Training;

    impl Resource for Training {
        const KIND: &'static str = "Training";
        const PLURAL: &'static str = "trainings";
        const SCOPE: Scope = Scope::ZonedWorkspaced;
        type Spec = TrainingSpec;
        type Status = TrainingStatus;
    }

    #[test]
    fn a_typed_kind_defines_itself_and_reads_its_objects() {
        let definition = Training::definition();
        assert_eq!(definition["metadata"]["name"], "trainings");
        let spec: DefinitionSpec = serde_json::from_value(definition["spec"].clone()).unwrap();
        assert!(spec.status, "a kind with a status type has a status");
        assert_eq!(spec.schema["properties"]["epochs"]["type"], "integer");
        assert!(spec.schema["required"].to_string().contains("epochs"));

        let row = Row {
            key: ObjectKey::new(Kind::Workload, "z", "w", "run"),
            uid: String::new(),
            version: 1,
            generation: 3,
            spec_hash: String::new(),
            owner: String::new(),
            labels: BTreeMap::new(),
            created: 0,
            updated: 0,
            resource: Arc::new(json!({"epochs": 5})),
            desired: Arc::new(Value::Null),
            computed: Arc::new(Value::Null),
            computed_version: 0,
            observed: Arc::new(Value::Null),
            observed_version: 0,
            meta: Default::default(),
        };
        let object = Object::<Training>::from_row(&row).unwrap();
        assert_eq!((object.spec.epochs, object.status.done), (5, 0));
        assert_eq!(object.generation, 3);
        assert_eq!(
            object.path(),
            "/v1/zones/z/workspaces/w/trainings/run",
            "a typed kind has paths before this process learns its Definition"
        );
        let broken = Row {
            resource: Arc::new(json!({"epochs": "many"})),
            ..row
        };
        assert!(Object::<Training>::from_row(&broken).is_err());
    }
}
