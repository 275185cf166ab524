import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import { describeWithRedis, OutputProcess, startRedisServer } from './redis.js';

/** Sends PING over a plain socket and resolves to the server's answer. */
function ping(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write('PING\r\n'));
    socket.setEncoding('utf8').once('data', (answer: string) => {
      socket.end();
      resolve(answer.trim());
    });
    socket.once('error', reject);
  });
}

describe('OutputProcess', () => {
  it('keeps stdout and stderr lines, finds one already printed, and rejects at once when the process ends without it', async () => {
    const child = new OutputProcess(spawn('sh', ['-c', 'echo one; echo two >&2'], { stdio: ['ignore', 'pipe', 'pipe'] }));
    expect(await child.waitForLine(/^tw/)).toBe('two');
    await expect(child.waitForLine(/three/, 10_000)).rejects.toThrow(/ended without a line matching \/three\/; output:\n/);
    expect(await child.exited).toBe(0);
    expect([...child.lines].sort()).toEqual(['one', 'two']);
    expect(child.count(/o/)).toBe(2);
  });
});

describeWithRedis('startRedisServer', () => {
  it('serves on a free port of 127.0.0.1 until stopped, and restarts on the same port', async () => {
    const redis = await startRedisServer();
    try {
      expect(redis.url).toBe(`redis://127.0.0.1:${redis.port}`);
      expect(await ping(redis.port)).toBe('+PONG');
      await redis.restart();
      expect(await ping(redis.port)).toBe('+PONG');
      await redis.stop();
      await expect(ping(redis.port)).rejects.toThrow(/ECONNREFUSED/);
    } finally {
      await redis.stop();
    }
  });
});
