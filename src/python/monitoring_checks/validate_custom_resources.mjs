// Checks prometheus-operator objects against the operator's CRD schemas, as compiled by
// @kubernetes-models/prometheus-operator. Usage: node validate_custom_resources.mjs OBJECTS.json
// (a JSON list). One line per object, "valid KIND NAME" or "invalid KIND NAME: why"; exit 1 if any
// is invalid or of a kind it does not know.
import { readFileSync } from "node:fs";
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

const models = { PodMonitor, PrometheusRule, ServiceMonitor };
let invalid = 0;
for (const object of JSON.parse(readFileSync(process.argv[2], "utf8"))) {
  const name = `${object.kind} ${object.metadata?.name}`;
  const Model = models[object.kind];
  if (object.apiVersion !== "monitoring.coreos.com/v1" || Model === undefined) {
    invalid++;
    console.log(`invalid ${name}: not a monitoring.coreos.com/v1 kind this checks`);
    continue;
  }
  try {
    new Model(object).validate();
    console.log(`valid ${name}`);
  } catch (error) {
    invalid++;
    console.log(`invalid ${name}: ${error.message}`);
  }
}
process.exit(invalid ? 1 : 0);
