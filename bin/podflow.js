#!/usr/bin/env node
import '../dist/cmd/podflow.js';
