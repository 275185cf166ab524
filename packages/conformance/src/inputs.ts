// The input pictures the refs describe in words (`init_image`, `mask_image`, `control_image`, `ip_adapter_image`,
// `image_encoder[].image`): one parser, shared with @diff/core's tests, lives in @diff/test-fixtures.
export { describedImage } from '@diff/test-fixtures';
