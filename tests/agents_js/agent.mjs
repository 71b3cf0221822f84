// OpenAI's Agents SDK for JavaScript with its defaults (a RealtimeSession over OpenAIRealtimeWebSocket), pointed
// at fishvoice serve: `node agent.mjs URL [speech.pcm | --weather]` asks a typed question, or speaks the raw
// pcm16 (24 kHz) file as a microphone would, or asks about the weather with a get_weather tool it must call
// (tool choice "required": a small model does not choose one itself), and prints what came back as one JSON line.
import { readFileSync } from 'node:fs';
import { OpenAIRealtimeWebSocket, RealtimeAgent, RealtimeSession, tool } from '@openai/agents-realtime';

const [base, input] = process.argv.slice(2);
const weather = input === '--weather';
const speechFile = weather ? undefined : input;
const seen = { audioBytes: 0, errors: [], events: [], toolCalls: [] };
const getWeather = tool({
  name: 'get_weather',
  description: 'The weather now in a city',
  parameters: {
    type: 'object',
    properties: { city: { type: 'string' } },
    required: ['city'],
    additionalProperties: false,
  },
  strict: true,
  execute: async ({ city }) => {
    seen.toolCalls.push(city);
    return `Heavy snow in ${city}, minus seven degrees.`;
  },
});
const agent = new RealtimeAgent({
  name: 'Assistant',
  instructions: 'Answer in one short sentence.',
  tools: weather ? [getWeather] : [],
});
const transport = new OpenAIRealtimeWebSocket({ url: `${base.replace(/^http/, 'ws')}/v1/realtime` });
const config = weather ? { toolChoice: 'required' } : {};
const session = new RealtimeSession(agent, { transport, model: 'fishvoice', config });
session.on('audio', (event) => {
  seen.audioBytes += event.data.byteLength;
});
session.on('error', (event) => seen.errors.push(String(event.error?.message ?? JSON.stringify(event.error))));
transport.on('*', (event) => seen.events.push(event.type));

await session.connect({ apiKey: process.env.FISHVOICE_KEY });
// the spoken answer ends the run (a response that only calls the tool ends with no text)
const answered = new Promise((resolve) =>
  session.on('agent_end', (_context, _agent, text) => text && resolve(text)),
);
if (speechFile) {
  const speech = readFileSync(speechFile);
  const chunk = 960; // 20 ms of pcm16 at 24 kHz
  for (let at = 0; at < speech.length; at += chunk) {
    const piece = speech.subarray(at, at + chunk);
    session.sendAudio(piece.buffer.slice(piece.byteOffset, piece.byteOffset + piece.byteLength));
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
} else {
  session.sendMessage(weather ? 'What is the weather in Paris?' : 'What is the capital of France?');
}
const timeout = new Promise((resolve) => setTimeout(() => resolve(null), 120000));
const text = await Promise.race([answered, timeout]);
const history = session.history.map((item) => ({
  role: item.role ?? item.type,
  content: item.content,
  output: item.output,
}));
console.log(JSON.stringify({ text, history, ...seen }));
session.close();
process.exit(0);
