// ES module entry point: the same API as the CommonJS one (index.js).
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const promptops = require('./index.js');

export const {
  Client,
  Prompt,
  Rendered,
  CompletionStream,
  countTokens,
  countTokensDetailed,
  tokenizerForModel,
  estimateCost,
  validatePolicy,
  routeBucket,
  setJsRender,
  PromptOpsError,
  PromptNotFoundError,
  TemplateError,
  VariableError,
  ValidationError,
  IncludeCycleError,
  ParseError,
  SnapshotError,
  UnknownModelError,
  OutputLimitError,
  FuelExhaustedError,
  ConfigError,
  RegistryUnavailableError,
  IoError,
  PolicyError,
  NoRouteError,
  ProviderError,
} = promptops;

export default promptops;
