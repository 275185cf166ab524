/**
 * Per-page sessions without server state: a token is a random nonce and its HMAC under a key made at start-up, so
 * the server recognises the tokens it issued (and only those) without keeping a list; a restart invalidates them.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/** The request and response header that carries a page's token. */
export const SESSION_HEADER = 'x-playground-session';

export class Sessions {
  private readonly key = randomBytes(32);

  /** A new token: 128 random bits and their signature, base64url. */
  issue(): string {
    const nonce = randomBytes(16).toString('base64url');
    return `${nonce}.${this.sign(nonce)}`;
  }

  /** Whether this server issued `token`. */
  verify(token: string): boolean {
    const [nonce, signature, ...rest] = token.split('.');
    if (rest.length > 0 || !nonce || !signature) return false;
    const expected = Buffer.from(this.sign(nonce));
    const given = Buffer.from(signature);
    return given.length === expected.length && timingSafeEqual(given, expected);
  }

  private sign(nonce: string): string {
    return createHmac('sha256', this.key).update(nonce).digest('base64url');
  }
}
