// The openai Node SDK as a client of the gateway: one plain and one streamed tool call.
//
// tests/test_real_clients.py runs it with the packages of package-lock.json (`make clients`). It
// reads {"base_url", "api_key", "model", "messages", "tools"} as JSON on stdin and writes
// {"plain", "streamed", "stream_helper"} as JSON on stdout, each part {"content",
// "finish_reason", "tool_calls": [{"id", "name", "arguments"}]} as the caller saw it, or
// {"error"} when the SDK threw. "stream_helper" is the SDK's own chunk accumulator
// (chat.completions.stream(...).finalChatCompletion()), which rejects malformed sequences.
import OpenAI from "openai";

async function readStdin() {
  const parts = [];
  for await (const part of process.stdin) parts.push(part);
  return Buffer.concat(parts).toString("utf8");
}

function described(message, finishReason) {
  return {
    content: message.content ?? null,
    finish_reason: finishReason,
    tool_calls: (message.tool_calls ?? []).map((call) => ({
      id: call.id,
      name: call.function.name,
      arguments: call.function.arguments,
    })),
  };
}

async function plain(client, request) {
  const reply = await client.chat.completions.create(request);
  return described(reply.choices[0].message, reply.choices[0].finish_reason);
}

// Deltas put together by index as an agent loop does: the id and name come in a call's first
// fragment, its arguments in pieces to concatenate.
async function streamed(client, request) {
  const calls = new Map();
  let content = "";
  let finishReason = null;
  const stream = await client.chat.completions.create({ ...request, stream: true });
  for await (const chunk of stream) {
    const choice = chunk.choices[0];
    if (!choice) continue;
    content += choice.delta?.content ?? "";
    finishReason = choice.finish_reason ?? finishReason;
    for (const fragment of choice.delta?.tool_calls ?? []) {
      if (!calls.has(fragment.index)) calls.set(fragment.index, { id: null, name: null, arguments: "" });
      const call = calls.get(fragment.index);
      call.id = call.id ?? fragment.id ?? null;
      call.name = call.name ?? fragment.function?.name ?? null;
      call.arguments += fragment.function?.arguments ?? "";
    }
  }
  const ordered = [...calls.keys()].sort((a, b) => a - b).map((index) => calls.get(index));
  return { content: content || null, finish_reason: finishReason, tool_calls: ordered };
}

async function streamHelper(client, request) {
  const completion = await client.chat.completions.stream(request).finalChatCompletion();
  return described(completion.choices[0].message, completion.choices[0].finish_reason);
}

const spec = JSON.parse(await readStdin());
const client = new OpenAI({ baseURL: spec.base_url, apiKey: spec.api_key, maxRetries: 0, timeout: 30000 });
const request = { model: spec.model, messages: spec.messages, tools: spec.tools };
const result = {};
for (const [name, call] of [["plain", plain], ["streamed", streamed], ["stream_helper", streamHelper]]) {
  try {
    result[name] = await call(client, request);
  } catch (error) {
    result[name] = { error: `${error?.constructor?.name ?? "Error"}: ${error?.message ?? error}` };
  }
}
process.stdout.write(JSON.stringify(result) + "\n");
