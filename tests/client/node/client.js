// Run by tests/client/test_node_client.py: node client.js PROTO_ROOT ADDRESS
const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");
const [protoRoot, address] = process.argv.slice(2);
const definition = loader.loadSync("lookalike/v1/lookalike.proto", {
  includeDirs: [protoRoot], keepCase: true, longs: Number, defaults: true,
});
const { ImageSearch } = grpc.loadPackageDefinition(definition).lookalike.v1;
const client = new ImageSearch(address, grpc.credentials.createInsecure());
const call = (method, request) => new Promise((resolve, reject) =>
  client[method](request, { deadline: Date.now() + 20000 }, (error, reply) =>
    error ? reject(error) : resolve(reply)));
(async () => {
  const values = Array.from({ length: 16 }, (_, i) => (i === 3 ? 1 : 0.01 * i));
  const item = { id: "from-node", vector: { values }, metadata: { lang: "js" } };
  const added = await call("Add", item);
  const found = await call("Search", { vector: { values }, k: 1 });
  const deleted = await call("Delete", { ids: ["from-node", "absent"] });
  let code = null;
  try { await call("Get", { id: "from-node" }); } catch (error) { code = error.code; }
  console.log(JSON.stringify({ added, found, deleted, code }));
})().catch((error) => { console.error(error); process.exit(1); });
