// Validates the custom resources of rendered manifests (JSON array on
// stdin) against the CRD models published on npm. Prints one line per
// object; exits 1 if any object is invalid or of an unknown kind.
import { ServiceMonitor, PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
import { ExternalSecret, SecretStore } from "@kubernetes-models/external-secrets/external-secrets.io/v1beta1";

const models = {
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
  "monitoring.coreos.com/v1/PrometheusRule": PrometheusRule,
  "external-secrets.io/v1beta1/ExternalSecret": ExternalSecret,
  "external-secrets.io/v1beta1/SecretStore": SecretStore,
};

let input = "";
for await (const chunk of process.stdin) input += chunk;
let failed = 0;
for (const obj of JSON.parse(input)) {
  const key = `${obj.apiVersion}/${obj.kind}`;
  const Model = models[key];
  if (!Model) {
    console.log(`UNKNOWN ${key} ${obj.metadata?.name}`);
    failed++;
    continue;
  }
  try {
    new Model(obj).validate();
    console.log(`OK ${key} ${obj.metadata.name}`);
  } catch (err) {
    console.log(`INVALID ${key} ${obj.metadata?.name}: ${err.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
