//! `[node]`: the node's name and roles.

use serde::Deserialize;

use super::Problems;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Unique in the cluster; shown in logs and in the admin API.
    pub name: String,
    /// What this node runs. `source` and `sequencer` go together: the sequencer must hear of
    /// every frame the source accepts, so they share a node.
    pub roles: Vec<Role>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            name: "kadr".into(),
            roles: vec![Role::Source, Role::Sequencer, Role::Detector],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads frames from Redis and dispatches them to detectors across the cluster.
    Source,
    /// Puts results back in order and publishes them.
    Sequencer,
    /// Runs a pool of detectors for any source in the cluster.
    Detector,
}

impl NodeConfig {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

impl NodeConfig {
    pub(super) fn check(&self, p: &mut Problems) {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !name_ok {
            p.add(
                "node.name",
                "must be 1-64 characters of letters, digits, '-', '_' or '.'",
            );
        }
        if self.roles.is_empty() {
            p.add("node.roles", "must name at least one role");
        }
        if self.has(Role::Source) != self.has(Role::Sequencer) {
            p.add(
                "node.roles",
                "must have both \"source\" and \"sequencer\" or neither (the sequencer must hear of every frame the source accepts)",
            );
        }
    }
}
