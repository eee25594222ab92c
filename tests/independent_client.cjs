// An independent gRPC client (Node's @grpc/grpc-js, the .proto files as the only contract) for
// tests/test_independent_client.py. Reads a JSON plan (argv[2]): proto files and include dirs, then calls,
// each with its own client certificate; prints one JSON result per call: status code, details, response.
"use strict";
const fs = require("fs");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const plan = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const definition = protoLoader.loadSync(plan.protos, {
  includeDirs: plan.includeDirs,
  keepCase: true,
  longs: String,
  enums: String,
  defaults: false,
  oneofs: true,
});
const loaded = grpc.loadPackageDefinition(definition);

function serviceClient(fullName) {
  return fullName.split(".").reduce((node, part) => node[part], loaded);
}

function call(step) {
  return new Promise((resolve) => {
    const credentials = grpc.credentials.createSsl(
      fs.readFileSync(step.ca),
      step.key ? fs.readFileSync(step.key) : null,
      step.cert ? fs.readFileSync(step.cert) : null,
    );
    const Client = serviceClient(step.service);
    const client = new Client(step.target, credentials);
    const deadline = new Date(Date.now() + 10000);
    client[step.method](step.request, { deadline }, (error, response) => {
      client.close();
      if (error) {
        resolve({ code: error.code, details: error.details, response: null });
      } else {
        resolve({ code: 0, details: "", response });
      }
    });
  });
}

(async () => {
  const results = [];
  for (const step of plan.calls) {
    results.push(await call(step));
  }
  process.stdout.write(JSON.stringify(results));
})();
