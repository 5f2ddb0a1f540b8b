// The trainee's history page: draws the scores-over-time chart from the JSON the page carries.
import { scoreLineChart } from "./charts.js";
import { readJson } from "./util.js";

const points = readJson("history-points", []);
const box = document.getElementById("history-chart");
if (box && points.length) scoreLineChart(box, points);
