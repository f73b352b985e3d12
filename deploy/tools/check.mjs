// Checks the rendered manifests of every overlay without a cluster:
//   node deploy/tools/check.mjs RENDERED_DIR SECRETS_YAML
// RENDERED_DIR holds <overlay>.yaml (`kubectl kustomize deploy/k8s/overlays/<overlay>`),
// SECRETS_YAML the Secrets deploy/k8s/secrets.sh writes. For every document:
//   - schema validation with the kubernetes-models packages (Kubernetes, prometheus-operator,
//     KEDA), and a check for fields no schema knows (a typo an API server would drop or refuse),
//     read from the packages' type declarations;
// and what only an API server or the running pods would catch:
//   - every probe of an Arbor container is a grpc probe on the port its --health_address names
//     (Redis: tcpSocket on its port); startup, readiness and liveness all present;
//   - terminationGracePeriodSeconds >= preStop sleep + ARBOR_SHUTDOWN_GRACE_MS + the 10 s drain;
//   - Service, PodDisruptionBudget and NetworkPolicy selectors match pods; Service target ports
//     and NetworkPolicy ports are named container ports of those pods; ServiceMonitor selectors
//     match a Service having the endpoint's port; ScaledObjects target a workload that exists;
//   - no HorizontalPodAutoscaler scales on CPU;
//   - every ConfigMap and Secret a pod uses exists (Secrets: in SECRETS_YAML);
//   - the restrictive securityContext on every pod and container.
// The podman overlay (host network, no ports, no cluster objects played) gets the schema and
// workload checks only. Prints every problem, exits 1 if any.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import yaml from "js-yaml";

// The packages export ES modules only: resolved as imports, from this file's folder.
const resolveDts = (spec) => fileURLToPath(import.meta.resolve(spec)).replace(/\.m?js$/, ".d.ts");
const problems = [];
const fail = (where, what) => problems.push(`${where}: ${what}`);

// ---- models and their declared fields ----

const MODEL_PACKAGES = [
  { match: (g) => g === "monitoring.coreos.com", pkg: "@kubernetes-models/prometheus-operator" },
  { match: (g) => g === "keda.sh", pkg: "@kubernetes-models/keda" },
  { match: () => true, pkg: "kubernetes-models" },
];

function modelPath(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const { pkg } = MODEL_PACKAGES.find((p) => p.match(group));
  return `${pkg}/${group ? `${group}/` : ""}${version}/${kind}`;
}

async function loadModel(apiVersion, kind) {
  const spec = modelPath(apiVersion, kind);
  const mod = await import(spec);
  const dts = resolveDts(spec);
  return { Model: mod[kind], dts, iface: `I${kind}` };
}

// A tiny reader of the packages' .d.ts files: interfaces, their properties and property types.
const declCache = new Map();
function readDecl(file) {
  if (declCache.has(file)) return declCache.get(file);
  const text = fs.readFileSync(file, "utf8").replace(/\/\*[\s\S]*?\*\//g, "");
  const imports = new Map();
  for (const m of text.matchAll(/import\s*\{([^}]*)\}\s*from\s*"([^"]+)"/g)) {
    for (const n of m[1].split(",").map((s) => s.trim()).filter(Boolean)) {
      const [orig, alias] = n.split(/\s+as\s+/);
      imports.set((alias || orig).trim(), { name: orig.trim(), from: m[2] });
    }
  }
  const aliases = new Map();  // exported alias -> local name
  for (const m of text.matchAll(/export\s+type\s*\{([^}]*)\}/g)) {
    for (const n of m[1].split(",").map((s) => s.trim()).filter(Boolean)) {
      const [orig, alias] = n.split(/\s+as\s+/);
      if (alias) aliases.set(alias.trim(), orig.trim());
    }
  }
  const interfaces = new Map();
  for (const m of text.matchAll(/export\s+interface\s+(\w+)(?:\s+extends\s+([\w,\s]+))?\s*\{/g)) {
    const start = m.index + m[0].length;
    let depth = 1, i = start;
    while (depth > 0 && i < text.length) {
      if (text[i] === "{") depth++;
      else if (text[i] === "}") depth--;
      i++;
    }
    interfaces.set(m[1], { body: text.slice(start, i - 1), extends: m[2] || "" });
  }
  const decl = { file, imports, aliases, interfaces };
  declCache.set(file, decl);
  return decl;
}

function resolveFile(from, spec) {
  if (spec.startsWith(".")) return path.resolve(path.dirname(from), spec).replace(/\.m?js$/, ".d.ts");
  return resolveDts(spec);
}

// Properties of interface `name` in `file`: Map prop -> { type, file }.
function propsOf(file, name) {
  const decl = readDecl(file);
  const local = decl.aliases.get(name) || name;
  if (!decl.interfaces.has(local)) {
    const imp = decl.imports.get(name);
    if (!imp) return null;
    return propsOf(resolveFile(file, imp.from), imp.name);
  }
  const { body, extends: ext } = decl.interfaces.get(local);
  const props = new Map();
  if (/\bTypeMeta\b/.test(ext)) {
    props.set("apiVersion", { type: "string", file });
    props.set("kind", { type: "string", file });
  }
  for (const [k, v] of parseProps(body, file)) props.set(k, v);
  return props;
}

// The properties of an interface or inline object body: "name"?: TYPE; with TYPE read to the
// ';' at depth 0.
function parseProps(body, file) {
  const props = new Map();
  const re = /"?([\w$-]+)"?\??\s*:\s*/g;
  let m, at = 0;
  while ((re.lastIndex = at), (m = re.exec(body))) {
    let i = re.lastIndex, depth = 0;
    while (i < body.length && !(depth === 0 && body[i] === ";")) {
      if ("{<(".includes(body[i])) depth++;
      else if ("}>)".includes(body[i])) depth--;
      i++;
    }
    props.set(m[1], { type: body.slice(re.lastIndex, i).trim(), file });
    at = i + 1;
  }
  return props;
}

// Walks `value` against `type` (a .d.ts type string in `file`), reporting unknown fields.
function checkFields(where, value, type, file) {
  if (value === null || typeof value !== "object") return;
  let t = type.trim();
  let m;
  if ((m = t.match(/^Array<([\s\S]+)>$/)) || (m = t.match(/^([\w$]+)\[\]$/))) {
    if (Array.isArray(value)) value.forEach((v, i) => checkFields(`${where}[${i}]`, v, m[1], file));
    return;
  }
  if ((m = t.match(/^\{\s*\[key: string\]:\s*([\s\S]+?);?\s*\}$/))) {
    for (const [k, v] of Object.entries(value)) checkFields(`${where}.${k}`, v, m[1], file);
    return;
  }
  if (t.startsWith("{")) {  // an inline object type
    return checkObject(where, value, parseProps(t.slice(1, -1), file));
  }
  if (!/^I[\w$]+$/.test(t)) return;  // a primitive, union or open type
  const props = propsOf(file, t);
  if (props) checkObject(where, value, props);
}

function checkObject(where, value, props) {
  if (Array.isArray(value)) return;
  for (const [k, v] of Object.entries(value)) {
    const p = props.get(k);
    if (!p) {
      fail(where, `unknown field "${k}"`);
      continue;
    }
    checkFields(`${where}.${k}`, v, p.type, p.file);
  }
}

// ---- helpers over the rendered objects ----

const isWorkload = (d) => ["Deployment", "StatefulSet"].includes(d.kind);
const nameOf = (d) => `${d.kind}/${d.metadata.name}`;
const matches = (selector, labels) =>
  Object.entries(selector || {}).every(([k, v]) => (labels || {})[k] === v);
const podLabels = (w) => w.spec.template.metadata.labels || {};
const containersOf = (w) => w.spec.template.spec.containers || [];
const isArbor = (c) => /arbor/.test(c.image) && !(c.command || []).includes("redis-server");

function healthPort(c) {
  const a = (c.args || []).find((x) => x.startsWith("--health_address="));
  return a ? Number(a.split(":").pop()) : null;
}

function checkWorkload(w, configMaps, secrets, overlay) {
  const where = `${overlay}: ${nameOf(w)}`;
  const pod = w.spec.template.spec;
  const psc = pod.securityContext || {};
  if (psc.runAsNonRoot !== true) fail(where, "pod securityContext.runAsNonRoot is not true");
  if (psc.seccompProfile?.type !== "RuntimeDefault") fail(where, "pod seccompProfile is not RuntimeDefault");
  if (pod.automountServiceAccountToken !== false) fail(where, "the service account token is mounted");
  const grace = pod.terminationGracePeriodSeconds ?? 30;
  for (const c of containersOf(w)) {
    const cw = `${where} container ${c.name}`;
    const sc = c.securityContext || {};
    if (sc.allowPrivilegeEscalation !== false) fail(cw, "allowPrivilegeEscalation is not false");
    if (sc.readOnlyRootFilesystem !== true) fail(cw, "readOnlyRootFilesystem is not true");
    if (!(sc.capabilities?.drop || []).includes("ALL")) fail(cw, "capabilities do not drop ALL");
    if (!c.resources?.requests || !c.resources?.limits?.memory) fail(cw, "no requests or memory limit");
    for (const kind of ["startupProbe", "readinessProbe", "livenessProbe"]) {
      const p = c[kind];
      if (!p) {
        fail(cw, `no ${kind}`);
        continue;
      }
      if (isArbor(c)) {
        const hp = healthPort(c);
        if (!p.grpc) fail(cw, `${kind} is not a grpc probe`);
        else if (hp === null) fail(cw, `${kind} probes port ${p.grpc.port} but no --health_address is set`);
        else if (p.grpc.port !== hp) fail(cw, `${kind} probes port ${p.grpc.port}, --health_address is on ${hp}`);
      } else if (!p.tcpSocket && !p.exec && !p.grpc) {
        fail(cw, `${kind} checks nothing`);
      }
    }
    // Shutdown: preStop sleep, then NOT_SERVING for the grace, then the drain (10 s).
    if (isArbor(c)) {
      const sleep = Number((c.lifecycle?.preStop?.exec?.command || [])[1] ?? NaN);
      if (!Number.isFinite(sleep)) fail(cw, "no preStop sleep");
      let graceMs = NaN;
      for (const ref of c.envFrom || []) {
        const cm = configMaps.get(ref.configMapRef?.name);
        if (cm?.data?.ARBOR_SHUTDOWN_GRACE_MS) graceMs = Number(cm.data.ARBOR_SHUTDOWN_GRACE_MS);
      }
      const env = (c.env || []).find((e) => e.name === "ARBOR_SHUTDOWN_GRACE_MS");
      if (env) graceMs = Number(env.value);
      if (!Number.isFinite(graceMs)) fail(cw, "ARBOR_SHUTDOWN_GRACE_MS is not set");
      const needed = sleep + graceMs / 1000 + 10;
      if (grace < needed) {
        fail(cw, `terminationGracePeriodSeconds ${grace} < preStop ${sleep} s + grace ${graceMs / 1000} s + drain 10 s`);
      }
    }
    for (const ref of c.envFrom || []) {
      if (ref.configMapRef && !configMaps.has(ref.configMapRef.name)) fail(cw, `ConfigMap ${ref.configMapRef.name} is not rendered`);
    }
  }
  for (const v of pod.volumes || []) {
    if (v.secret && overlay !== "podman" && !secrets.has(v.secret.secretName)) {
      fail(where, `Secret ${v.secret.secretName} is not one deploy/k8s/secrets.sh makes`);
    }
    if (v.configMap && !configMaps.has(v.configMap.name)) fail(where, `ConfigMap ${v.configMap.name} is not rendered`);
  }
  if (overlay === "podman" && !pod.hostNetwork) fail(where, "the podman overlay needs hostNetwork");
}

function namedPorts(w) {
  const ports = new Map();
  for (const c of containersOf(w)) for (const p of c.ports || []) if (p.name) ports.set(p.name, p.containerPort);
  return ports;
}

function checkCluster(docs, overlay) {
  const workloads = docs.filter(isWorkload);
  const services = docs.filter((d) => d.kind === "Service");
  const podsOf = (selector) => workloads.filter((w) => matches(selector, podLabels(w)));
  for (const s of services) {
    const where = `${overlay}: ${nameOf(s)}`;
    const pods = podsOf(s.spec.selector);
    if (pods.length === 0) fail(where, "selects no pods");
    for (const p of s.spec.ports || []) {
      if (typeof p.targetPort === "string" && !pods.every((w) => namedPorts(w).has(p.targetPort))) {
        fail(where, `targetPort ${p.targetPort} is not a port of every pod it selects`);
      }
    }
  }
  for (const d of docs.filter((x) => x.kind === "PodDisruptionBudget")) {
    if (podsOf(d.spec.selector.matchLabels).length === 0) fail(`${overlay}: ${nameOf(d)}`, "selects no pods");
  }
  for (const d of docs.filter((x) => x.kind === "NetworkPolicy")) {
    const where = `${overlay}: ${nameOf(d)}`;
    const pods = podsOf(d.spec.podSelector.matchLabels);
    if (pods.length === 0) fail(where, "selects no pods");
    for (const rule of d.spec.ingress || []) {
      for (const p of rule.ports || []) {
        if (typeof p.port === "string" && !pods.every((w) => namedPorts(w).has(p.port))) {
          fail(where, `port ${p.port} is not a port of every pod it selects`);
        }
      }
      for (const f of rule.from || []) {
        if (f.podSelector && podsOf(f.podSelector.matchLabels).length === 0) fail(where, "a from podSelector selects no pods");
      }
    }
  }
  for (const d of docs.filter((x) => x.kind === "ServiceMonitor")) {
    const where = `${overlay}: ${nameOf(d)}`;
    const svc = services.filter((s) => matches(d.spec.selector.matchLabels, s.metadata.labels));
    if (svc.length === 0) fail(where, "selects no Service");
    for (const e of d.spec.endpoints || []) {
      if (!svc.every((s) => (s.spec.ports || []).some((p) => p.name === e.port))) fail(where, `port ${e.port} is not a port of its Service`);
    }
  }
  for (const d of docs.filter((x) => x.kind === "ScaledObject")) {
    const t = d.spec.scaleTargetRef;
    if (!workloads.some((w) => w.metadata.name === t.name && w.kind === (t.kind || "Deployment"))) {
      fail(`${overlay}: ${nameOf(d)}`, `scales ${t.kind || "Deployment"}/${t.name}, which is not rendered`);
    }
    for (const tr of d.spec.triggers || []) {
      if (tr.type === "cpu" || tr.type === "memory") fail(`${overlay}: ${nameOf(d)}`, `scales on ${tr.type}`);
    }
  }
  for (const d of docs.filter((x) => x.kind === "HorizontalPodAutoscaler")) {
    for (const m of d.spec.metrics || []) {
      if (m.type === "Resource" && m.resource?.name === "cpu") fail(`${overlay}: ${nameOf(d)}`, "scales on CPU");
    }
  }
}

// ---- main ----

const [renderedDir, secretsYaml] = process.argv.slice(2);
const secretNames = new Set(
  yaml.loadAll(fs.readFileSync(secretsYaml, "utf8")).filter(Boolean).map((d) => d.metadata.name));
let documents = 0;
for (const file of fs.readdirSync(renderedDir).filter((f) => f.endsWith(".yaml")).sort()) {
  const overlay = path.basename(file, ".yaml");
  const docs = yaml.loadAll(fs.readFileSync(path.join(renderedDir, file), "utf8")).filter(Boolean);
  for (const d of docs) {
    documents++;
    const where = `${overlay}: ${nameOf(d)}`;
    let model;
    try {
      model = await loadModel(d.apiVersion, d.kind);
    } catch (e) {
      fail(where, `no schema for ${d.apiVersion} ${d.kind}`);
      continue;
    }
    try {
      new model.Model(d).validate();
    } catch (e) {
      fail(where, `schema: ${e.message}`);
    }
    const props = propsOf(model.dts, model.iface);
    if (!props) fail(where, `cannot read the declared fields of ${d.kind}`);
    else checkObject(where, d, props);
  }
  const configMaps = new Map(docs.filter((d) => d.kind === "ConfigMap").map((d) => [d.metadata.name, d]));
  for (const w of docs.filter(isWorkload)) checkWorkload(w, configMaps, secretNames, overlay);
  if (overlay !== "podman") checkCluster(docs, overlay);
  console.log(`check: ${overlay}: ${docs.length} documents`);
}
if (problems.length > 0) {
  for (const p of problems) console.error(`check: ${p}`);
  console.error(`check: ${problems.length} problems in ${documents} documents`);
  process.exit(1);
}
console.log(`check: ${documents} documents, no problems`);
