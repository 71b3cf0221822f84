// OpenAI's Agents SDK for JavaScript with its defaults (a RealtimeSession over OpenAIRealtimeWebSocket), pointed
// at fishvoice serve: `node agent.mjs URL [speech.pcm]` asks a typed question, or speaks the raw pcm16 (24 kHz)
// file as a microphone would, and prints what came back as one JSON line.
import { readFileSync } from 'node:fs';
import { OpenAIRealtimeWebSocket, RealtimeAgent, RealtimeSession } from '@openai/agents-realtime';

const [base, speechFile] = process.argv.slice(2);
const agent = new RealtimeAgent({ name: 'Assistant', instructions: 'Answer in one short sentence.' });
const transport = new OpenAIRealtimeWebSocket({ url: `${base.replace(/^http/, 'ws')}/v1/realtime` });
const session = new RealtimeSession(agent, { transport, model: 'fishvoice' });
const seen = { audioBytes: 0, errors: [], events: [] };
session.on('audio', (event) => {
  seen.audioBytes += event.data.byteLength;
});
session.on('error', (event) => seen.errors.push(String(event.error?.message ?? JSON.stringify(event.error))));
transport.on('*', (event) => seen.events.push(event.type));

await session.connect({ apiKey: process.env.FISHVOICE_KEY });
const answered = new Promise((resolve) => session.on('agent_end', (_context, _agent, text) => resolve(text)));
if (speechFile) {
  const speech = readFileSync(speechFile);
  const chunk = 960; // 20 ms of pcm16 at 24 kHz
  for (let at = 0; at < speech.length; at += chunk) {
    const piece = speech.subarray(at, at + chunk);
    session.sendAudio(piece.buffer.slice(piece.byteOffset, piece.byteOffset + piece.byteLength));
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
} else {
  session.sendMessage('What is the capital of France?');
}
const timeout = new Promise((resolve) => setTimeout(() => resolve(null), 120000));
const text = await Promise.race([answered, timeout]);
const history = session.history.map((item) => ({ role: item.role ?? item.type, content: item.content }));
console.log(JSON.stringify({ text, history, ...seen }));
session.close();
process.exit(0);
