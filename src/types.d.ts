declare module "*.sql" {
  const text: string;
  export default text;
}
declare module "swagger-ui-dist/*" {
  /** The file's path (embedded in the compiled binary), from an import `with { type: "file" }`. */
  const path: string;
  export default path;
}
