export declare function greet(name: string): string;
export declare const GREETING_VERSION: string;
