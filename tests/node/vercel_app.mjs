// An application on the Vercel AI SDK with experimental_telemetry on, exporting its spans with the
// OTel JS SDK over OTLP/HTTP (protobuf) to llmobs-tui serve. Run by tests/test_real_stacks.py:
//   node vercel_app.mjs OTLP_HTTP_ENDPOINT OPENAI_BASE_URL EMAIL DUMP_FILE
import { writeFileSync } from "node:fs";
import { createOpenAI } from "@ai-sdk/openai";
import { embed, generateText, streamText } from "ai";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { NodeTracerProvider, BatchSpanProcessor, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-node";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";

const [endpoint, baseURL, email, dumpFile] = process.argv.slice(2);

const dumped = [];
const dumper = {
  export(spans, done) {
    for (const s of spans) {
      dumped.push({
        name: s.name,
        scope: s.instrumentationScope?.name ?? s.instrumentationLibrary?.name,
        trace_id: s.spanContext().traceId,
        span_id: s.spanContext().spanId,
        parent_id: s.parentSpanContext?.spanId ?? s.parentSpanId ?? null,
        kind: s.kind,
        status: s.status?.code,
        attributes: s.attributes,
      });
    }
    done({ code: 0 });
  },
  shutdown() { return Promise.resolve(); },
};

const provider = new NodeTracerProvider({
  resource: resourceFromAttributes({ "service.name": "vercel-refund-bot" }),
  spanProcessors: [
    new BatchSpanProcessor(new OTLPTraceExporter({ url: `${endpoint}/v1/traces` })),
    new SimpleSpanProcessor(dumper),
  ],
});
provider.register();

const openai = createOpenAI({ baseURL, apiKey: "sk-test" });
const telemetry = { isEnabled: true, functionId: "refund-answer" };

await generateText({
  model: openai.chat("gpt-4o"),
  prompt: `Where is my parcel? Write to me at ${email}`,
  maxRetries: 0,
  experimental_telemetry: telemetry,
});

const stream = streamText({
  model: openai.chat("gpt-4o-mini"),
  prompt: "When will it arrive?",
  maxRetries: 0,
  experimental_telemetry: telemetry,
});
for await (const _ of stream.textStream) { /* read to the end */ }

await embed({
  model: openai.embedding("text-embedding-3-small"),
  value: `refund policy for ${email}`,
  maxRetries: 0,
  experimental_telemetry: { isEnabled: true, functionId: "refund-search" },
});

await provider.shutdown();
writeFileSync(dumpFile, JSON.stringify(dumped, null, 1));
