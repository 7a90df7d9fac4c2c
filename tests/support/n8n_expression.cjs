// Evaluates one parameter of a node of an n8n workflow with n8n's own expression engine
// (npm n8n-workflow, pinned in package.json to the 1.x line the README targets), the way
// n8n resolves it while running that node. Reads a JSON request on stdin:
//   {workflow, node, parameter: "jsonBody" | "headerParameters.parameters.0.value" | ...,
//    runIndex, itemIndex, input: {previousNode, items},
//    runData: {"<node>": [{source: "<node>" | null, items: [[json, ...], ...]}, ...]}}
// and prints {"value": ...} or {"error": "..."}. Items are paired one to one with the
// item of the same index in the run before.
const { Workflow } = require('n8n-workflow');

const nodeTypes = {
  getByName: () => ({ description: { properties: [], inputs: ['main'], outputs: ['main'] } }),
  getByNameAndVersion: () => ({ description: { properties: [], inputs: ['main'], outputs: ['main'] } }),
  getKnownTypes: () => ({}),
};

function items(list) {
  return list.map((json, index) => ({ json, pairedItem: { item: index } }));
}

function run(request) {
  const workflow = new Workflow({
    id: 'workflow-under-test', nodes: structuredClone(request.workflow.nodes), connections: request.workflow.connections,
    active: false, nodeTypes, settings: request.workflow.settings,
  });
  const runData = {};
  for (const [name, runs] of Object.entries(request.runData || {})) {
    runData[name] = runs.map((r) => ({
      startTime: 0, executionTime: 0, executionStatus: 'success',
      source: r.source ? [{ previousNode: r.source, previousNodeOutput: r.sourceOutput || 0, previousNodeRun: r.sourceRun || 0 }] : [],
      data: { main: r.items.map(items) },
    }));
  }
  const runExecutionData = { resultData: { runData } };
  const input = items(request.input.items);
  const node = workflow.getNode(request.node);
  const executeData = {
    node, data: { main: [input] },
    source: { main: [{ previousNode: request.input.previousNode, previousNodeOutput: request.input.previousNodeOutput || 0, previousNodeRun: request.input.previousNodeRun || 0 }] },
  };
  // As written in the workflow file: the Workflow has dropped the parameters of node types
  // it does not know.
  let parameter = request.workflow.nodes.find((n) => n.name === request.node).parameters;
  for (const key of request.parameter.split('.')) parameter = parameter[key];
  const additionalKeys = { $execution: { id: request.executionId || '1234', mode: 'integrated' } };
  return workflow.expression.getParameterValue(
    parameter, runExecutionData, request.runIndex || 0, request.itemIndex || 0, request.node,
    input, 'integrated', additionalKeys, executeData,
  );
}

let text = '';
process.stdin.on('data', (chunk) => { text += chunk; });
process.stdin.on('end', () => {
  try {
    process.stdout.write(JSON.stringify({ value: run(JSON.parse(text)) }));
  } catch (error) {
    process.stdout.write(JSON.stringify({ error: String(error && error.message || error) }));
  }
});
