//! A static pod manifest for the provider, rendered from the parts a test
//! varies (image, supplemental groups, hostPath mounts, user): the file
//! `bao-kms-preflight node --manifest` and the agent read. Shared by
//! preflight's tests and the system tests that run real agents.

/// The parts of the static pod manifest a test varies.
pub struct ManifestSpec {
    pub image: String,
    pub supplemental_groups: Vec<u32>,
    /// (name, host path = mount path, read only)
    pub mounts: Vec<(String, String, bool)>,
    pub run_as_user: u32,
}

impl ManifestSpec {
    /// The Pod as YAML; the provider's `--config` is `config.yaml` in the
    /// first mount.
    pub fn render(&self) -> String {
        let mut mounts = String::new();
        let mut volumes = String::new();
        for (name, path, ro) in &self.mounts {
            mounts.push_str(&format!(
                "        - name: {name}\n          mountPath: {path}\n          readOnly: {ro}\n"
            ));
            volumes.push_str(&format!(
                "    - name: {name}\n      hostPath:\n        path: {path}\n        type: Directory\n"
            ));
        }
        format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: bao-kms-provider
  namespace: kube-system
spec:
  hostNetwork: true
  priorityClassName: system-node-critical
  securityContext:
    runAsNonRoot: true
    runAsUser: {uid}
    runAsGroup: 65532
    supplementalGroups: {groups:?}
  containers:
    - name: bao-kms-provider
      image: {image}
      args: ["serve", "--config={config}"]
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities:
          drop: [ALL]
      volumeMounts:
{mounts}  volumes:
{volumes}"#,
            uid = self.run_as_user,
            groups = self.supplemental_groups,
            image = self.image,
            config = self
                .mounts
                .first()
                .map(|m| format!("{}/config.yaml", m.1))
                .unwrap_or_default(),
        )
    }
}
